"""The suite in containers: the images built once per run (reused when their inputs are
unchanged), then one suite for the session (`twinfleet_suite`, the fixture `twinfleet.testing`
ships), handed to the integration tests as their `stack`, so the same tests run against it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devtools.stack import daprd_binary, device_daprd_binary
from twinfleet.testing import TwinfleetSuite


@pytest.fixture(scope="session", autouse=True)
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make images`, once per run (a few seconds when nothing changed); the session's suite runs
    exactly the images this build produced, by ID, whatever another checkout tags meanwhile."""
    ids = Path(tmp_path_factory.mktemp("images")) / "ids.json"
    command = [
        *(sys.executable, "-m", "services.devtools", "images", "build"),
        *("--daprd", daprd_binary(), "--device-daprd", device_daprd_binary(), "--ids", ids),
    ]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    built: dict[str, str] = json.loads(ids.read_text())
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("app", "daprd", "daprd-device", "redis", "mosquitto"):
            patch.setenv(f"TWINFLEET_{kind.upper().replace('-', '_')}_IMAGE", built[kind])
        yield built


@pytest.fixture(scope="module")
def stack(twinfleet_suite: TwinfleetSuite) -> TwinfleetSuite:
    return twinfleet_suite

"""The suite in containers: the images built once per run (reused when their inputs are
unchanged), then one suite for the session (`twinfleet_suite`, the fixture `twinfleet.testing`
ships), handed to the integration tests as their `stack`, so the same tests run against it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.devtools.stack import daprd_binary
from twinfleet.testing import TwinfleetSuite


@pytest.fixture(scope="session", autouse=True)
def images() -> None:
    """`make images`, once per run: a no-op (under a second) when nothing changed."""
    command = [sys.executable, "-m", "services.devtools", "images", "build", "--daprd", daprd_binary()]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(twinfleet_suite: TwinfleetSuite) -> TwinfleetSuite:
    return twinfleet_suite

"""Image builds see every change of their inputs: the build contexts are normalised (every time
set to the epoch) so that the same inputs give the same image, and BuildKit re-sends a context
directory it has seen by metadata only (size, time) — an edit that kept a file's size once reached
the app image stale (`request.json()` → `request.body()`, a broken app in every container)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest

from services.devtools.images.build import Builder, Spec
from services.devtools.images.tags import BASE_IMAGE
from services.devtools.stack import daprd_binary, device_daprd_binary

pytestmark = pytest.mark.containers
TAG = "twinfleet-test/same-size-edit:1"


def test_an_edit_that_keeps_a_files_size_reaches_the_next_build(tmp_path: Path, images: dict[str, str]) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY probe.txt /probe.txt\n")
    probe = tmp_path / "probe.txt"
    # an absolute `source` names the Dockerfile's folder itself (a path joined to an absolute one is it)
    spec = Spec("same-size-edit", TAG, BASE_IMAGE, {"probe.txt": probe}, source=str(source))
    builder = Builder(tmp_path / "cache", Path(daprd_binary()), Path(device_daprd_binary()))

    def built_with(text: str) -> str:
        probe.write_text(text)
        builder.image(spec)
        shown = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", TAG, "/probe.txt"],
            capture_output=True,
            text=True,
            check=True,
        )
        return shown.stdout

    try:
        assert built_with("await request.json()") == "await request.json()"
        assert built_with("await request.body()") == "await request.body()"
        assert not list((tmp_path / "cache" / "contexts").iterdir())  # each build's context removed
    finally:
        docker.from_env().images.remove(TAG, force=True)

"""What the image builder decides without an engine: the lock follows pyproject, the tags follow
the Makefile, normalization makes an image's ID a function of its content only, and every app
has an entrypoint."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from services.devtools.images import archive
from services.devtools.images.lock import LOCK, canonical, pins, unlocked
from services.devtools.images.tags import DAPR_RUNTIME_VERSION, EPOCH, ROOT
from services.platform import names
from services.platform.serve import APPS


def test_the_lock_holds_every_runtime_pin_of_pyproject() -> None:
    assert unlocked() == [], "pyproject changed: run `make images-lock`"


def test_a_pin_the_lock_lacks_is_reported(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["fastapi==0.1.0", "dapr==1.18.3"]\n')
    assert unlocked(LOCK, pyproject) == ["fastapi==0.1.0"]
    assert pins(LOCK)[canonical("PyYAML")] == "6.0.3"


def test_the_daprd_image_is_the_runtime_the_makefile_builds() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^DAPR_RUNTIME_VERSION := (\S+)$", makefile, re.M).group(1) == DAPR_RUNTIME_VERSION  # type: ignore[union-attr]


def test_every_dapr_app_has_an_entrypoint() -> None:
    apps = {names.TWIN_STORE_APP, names.DELTA_APP, names.EVENTS_APP, names.COMMANDS_APP, names.ROLLOUT_APP}
    assert set(APPS) == apps | {names.FIRMWARE_APP, names.DEVICE_AGENT_APP}
    for target in APPS.values():
        module, attribute = target.split(":")
        assert (ROOT / (module.replace(".", "/") + ".py")).exists() and attribute == "app"


def _layer(files: dict[str, bytes], mtime: int, owner: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uname = len(data), mtime, owner
            layer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _saved(layers: list[bytes], created: str) -> bytes:
    """An archive as `docker save` writes it, from one builder run."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = {
        "created": created,
        "container": "build-container-id",
        "config": {"Hostname": "abc", "Labels": {"org.opencontainers.image.version": "1"}},
        "history": [{"created": created, "created_by": "RUN make"}],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as saved:
        entries = {"config.json": json.dumps(config).encode()}
        entries |= {f"{i}/layer.tar": layer for i, layer in enumerate(layers)}
        entries["manifest.json"] = json.dumps(
            [{"Config": "config.json", "RepoTags": None, "Layers": [f"{i}/layer.tar" for i in range(len(layers))]}]
        ).encode()
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            saved.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _normalize(saved: bytes, tmp_path: Path, **options: object) -> tuple[str, bytes]:
    out = io.BytesIO()
    image_id = archive.normalize(io.BytesIO(saved), out, "x/y:1", EPOCH, {"k": "v"}, tmp_path, **options)  # type: ignore[arg-type]
    return image_id, out.getvalue()


def test_two_builds_of_the_same_content_normalize_to_the_same_image(tmp_path: Path) -> None:
    files = {"app/main.py": b"print(1)\n", "app/data": b"\x00" * 1000}
    first = _saved([_layer(files, EPOCH + 100, "root")], "2026-01-01T10:00:00Z")
    second = _saved([_layer(files, EPOCH + 999, "builder")], "2026-03-04T11:00:00Z")
    assert first != second
    one, archive_one = _normalize(first, tmp_path)
    two, archive_two = _normalize(second, tmp_path)
    assert one == two and archive_one == archive_two
    with tarfile.open(fileobj=io.BytesIO(archive_one)) as loaded:
        config = json.loads(loaded.extractfile(f"{one.removeprefix('sha256:')}.json").read())  # type: ignore[union-attr]
    assert config["created"] == archive.timestamp(EPOCH) and "container" not in config
    assert config["config"]["Labels"] == {"org.opencontainers.image.version": "1", "k": "v"}
    assert one == archive.image_id(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())


def test_different_content_gives_a_different_image(tmp_path: Path) -> None:
    one, _ = _normalize(_saved([_layer({"a": b"1"}, EPOCH, "")], "t"), tmp_path)
    two, _ = _normalize(_saved([_layer({"a": b"2"}, EPOCH, "")], "t"), tmp_path)
    assert one != two


def test_a_parents_layers_pass_unchanged_and_may_be_left_out(tmp_path: Path) -> None:
    parent = _layer({"base": b"b"}, EPOCH + 5, "root")  # not normal by our rules, but the parent's
    own = _layer({"app": b"a"}, EPOCH + 5, "root")
    saved = _saved([parent, own], "t")
    layers = (f"sha256:{hashlib.sha256(parent).hexdigest()}",)
    complete_id, complete = _normalize(saved, tmp_path, parent=layers)
    partial_id, partial = _normalize(saved, tmp_path, parent=layers, complete=False)
    assert complete_id == partial_id and len(partial) < len(complete)
    with tarfile.open(fileobj=io.BytesIO(complete)) as loaded:
        layers = [m.name for m in loaded if m.name.endswith("layer.tar")]
    assert f"{hashlib.sha256(parent).hexdigest()}/layer.tar" in layers


def test_a_rootfs_image_id_is_known_before_loading(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_layer({"etc/os-release": b"bookworm"}, EPOCH, ""))
    digest = hashlib.sha256(rootfs.read_bytes()).hexdigest()
    out = io.BytesIO()
    written = archive.rootfs_image(rootfs, digest, "b:1", EPOCH, ["LANG=C.UTF-8"], out)
    assert written == archive.image_id(archive.rootfs_config(digest, rootfs.name, EPOCH, ["LANG=C.UTF-8"]))


@pytest.mark.parametrize("kind", ["cloud", "agent"])
def test_the_testing_packages_dapr_files_equal_a_fresh_render(kind: str) -> None:
    from services.devtools import components
    from services.devtools.__main__ import PACKAGED_DAPR, PACKAGED_TARGETS

    target = PACKAGED_TARGETS[kind]
    rendered = components.render(target)
    packaged = {p.name: p.read_text() for p in (PACKAGED_DAPR / kind).glob("*.yaml")}
    assert set(packaged) == set(rendered), "run `make components`"
    for name, text in rendered.items():
        assert packaged[name].split("\n", 1)[1] == text, f"{kind}/{name}: run `make components`"


@pytest.mark.parametrize(
    ("deb", "package", "version"),
    [
        ("redis-server_5%3a7.0.15-1~deb12u10_amd64.deb", "redis-server", "7.0.15"),
        ("python3.11_3.11.2-6+deb12u9_amd64.deb", "python3.11", "3.11.2"),
        ("mosquitto_2.0.11-1.2+deb12u2_amd64.deb", "mosquitto", "2.0.11"),
    ],
)
def test_an_images_version_is_its_packages_upstream_version(
    tmp_path: Path, deb: str, package: str, version: str
) -> None:
    from services.devtools.images.build import upstream_version

    (tmp_path / deb).touch()
    assert upstream_version(tmp_path, package) == version


def test_a_layer_left_out_as_the_parents_is_still_written_when_the_image_repeats_it(tmp_path: Path) -> None:
    empty = _layer({}, EPOCH, "")  # e.g. a WORKDIR in the parent and again in the image
    own = _layer({"app": b"a"}, EPOCH, "")
    layers = (f"sha256:{hashlib.sha256(empty).hexdigest()}",)
    _, partial = _normalize(_saved([empty, own, empty], "t"), tmp_path, parent=layers, complete=False)
    with tarfile.open(fileobj=io.BytesIO(partial)) as loaded:
        layers = [m.name for m in loaded if m.name.endswith("layer.tar")]
    assert f"{hashlib.sha256(empty).hexdigest()}/layer.tar" in layers

"""Image archives whose ID is a function of their content only.

Docker's builders stamp build times into layers and configs, so the same inputs give a new image
ID on every build. `normalize` rewrites an archive from `docker save` the way reproducible
builders do (file times clamped to SOURCE_DATE_EPOCH, owner names and build-container fields
dropped, every `created` set to the epoch) and `rootfs_image` wraps a root filesystem tar as a
one-layer image with a fixed config; `docker load` of either gives the same ID for the same input.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

KEPT_PAX = ("path", "linkpath")


def timestamp(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes what passes through it on the way to `sink`."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.sink.write(data)
        return len(data)


def _canonical(config: dict[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _write_archive(
    out: IO[bytes], epoch: int, tag: str, config: bytes, layers: Iterable[tuple[str, Path | None]]
) -> str:
    """A docker-archive (manifest.json, config, layer tars) of one image; returns its ID. A layer
    without a path is left out: `docker load` takes it from the layers it already has."""
    digest = hashlib.sha256(config).hexdigest()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:

        def add(name: str, data: bytes | None = None, path: Path | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = epoch, 0o644
            if path is not None:
                info.size = path.stat().st_size
                with path.open("rb") as source:
                    archive.addfile(info, source)
            else:
                assert data is not None
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

        add(f"{digest}.json", config)
        names, written = [], set()
        for name, path in layers:
            if path is not None and name not in written:  # the same layer twice is stored once
                add(name, path=path)
                written.add(name)
            names.append(name)
        add("manifest.json", json.dumps([{"Config": f"{digest}.json", "RepoTags": [tag], "Layers": names}]).encode())
    return f"sha256:{digest}"


def image_id(config: bytes) -> str:
    return f"sha256:{hashlib.sha256(config).hexdigest()}"


def rootfs_config(digest: str, name: str, epoch: int, env: list[str]) -> bytes:
    """The config of the one-layer image of a root filesystem tar whose sha256 is `digest`."""
    created = timestamp(epoch)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env]},
        "history": [{"created": created, "created_by": f"scripts/build-rootfs.sh ({name})"}],
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]},
    }
    return _canonical(config)


def rootfs_image(rootfs: Path, digest: str, tag: str, epoch: int, env: list[str], out: IO[bytes]) -> str:
    """Write `rootfs` (an uncompressed tar whose sha256 is `digest`) as a one-layer image archive
    tagged `tag`; returns its ID."""
    config = rootfs_config(digest, rootfs.name, epoch, env)
    return _write_archive(out, epoch, tag, config, [(f"{digest}/layer.tar", rootfs)])


def _rewrite_layer(source: Path, target: Path, epoch: int) -> str:
    """Copy a layer tar with times clamped and owner names dropped; its diff_id."""
    with source.open("rb") as raw, target.open("wb") as sink:
        hashing = _Hashing(sink)
        with (
            tarfile.open(fileobj=raw, mode="r|*") as reader,
            tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as writer,
        ):
            for member in reader:
                member.mtime = min(int(member.mtime), epoch)
                member.uname = member.gname = ""
                member.pax_headers = {
                    k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.") or k in KEPT_PAX
                }
                writer.addfile(member, reader.extractfile(member) if member.isfile() else None)
    return f"sha256:{hashing.digest.hexdigest()}"


def normalize(
    source: IO[bytes],
    out: IO[bytes],
    tag: str,
    epoch: int,
    labels: dict[str, str],
    work: Path,
    parent: tuple[str, ...] = (),
    complete: bool = True,
) -> str:
    """Rewrite the one-image archive `docker save` streams from `source` into `out`, tagged `tag`
    with `labels` added; returns the image ID `docker load` will give it. The layers it starts
    with that are its (normalized) `parent`'s (their diff_ids, in order) are normal already: they
    pass unchanged, or are left out unless `complete` (the daemon loading it has that chain)."""
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        files: dict[str, Path] = {}
        digests: dict[str, str] = {}
        links: dict[str, str] = {}
        with tarfile.open(fileobj=source, mode="r|") as saved:
            for member in saved:
                if member.issym():  # a layer that occurs twice is stored once, then linked
                    target = os.path.join(os.path.dirname(member.name), member.linkname)
                    links[member.name] = os.path.normpath(target)
                elif member.isfile():
                    path = Path(scratch) / str(len(files))
                    extracted = saved.extractfile(member)
                    assert extracted is not None
                    with path.open("wb") as copy:
                        hashing = _Hashing(copy)
                        shutil.copyfileobj(extracted, hashing, 1 << 20)
                    files[member.name] = path
                    digests[member.name] = f"sha256:{hashing.digest.hexdigest()}"
        for name, target in links.items():
            files[name], digests[name] = files[target], digests[target]
        manifest = json.loads(files["manifest.json"].read_text())
        if len(manifest) != 1:
            raise ValueError("normalize takes an archive of exactly one image")
        config: dict[str, Any] = json.loads(files[manifest[0]["Config"]].read_text())
        layers: list[tuple[str, Path | None]] = []
        diff_ids: list[str] = []
        for index, name in enumerate(manifest[0]["Layers"]):
            rewritten = Path(scratch) / f"layer-{index}"
            if diff_ids == list(parent[:index]) and index < len(parent) and digests[name] == parent[index]:
                diff_id = digests[name]
                layers.append((f"{diff_id.removeprefix('sha256:')}/layer.tar", files[name] if complete else None))
                diff_ids.append(diff_id)
                continue
            diff_id = _rewrite_layer(files[name], rewritten, epoch)
            layers.append((f"{diff_id.removeprefix('sha256:')}/layer.tar", rewritten))
            diff_ids.append(diff_id)
        created = timestamp(epoch)
        config["rootfs"]["diff_ids"] = diff_ids
        config["created"] = created
        for step in config.get("history", []):
            step["created"] = created
        for volatile in ("container", "container_config", "docker_version"):
            config.pop(volatile, None)
        settings = config.setdefault("config", {})
        settings["Hostname"] = ""
        settings.pop("Image", None)  # the legacy builder's parent image ID
        settings["Labels"] = {**(settings.get("Labels") or {}), **labels}
        return _write_archive(out, epoch, tag, _canonical(config), layers)

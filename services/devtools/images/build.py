"""`make images`: every image of the suite, built on this machine from Debian packages, PyPI
wheels and our own binaries, with no registry and no network inside a build.

  base             the root filesystem scripts/build-rootfs.sh makes (mmdebstrap), loaded as is
  python           Debian's Python and the locked wheels (images/python/requirements.lock)
  app              the code: one image for every app and the device agent
  daprd            FROM scratch: the daprd the Makefile builds and a static health check
  redis, mosquitto Debian's packages on the base

Inputs are fetched first, into the cache, keyed by what decides them (the rootfs script, the
lock, the health check's source). Each image carries the digest of everything it is built from
(`INPUTS_LABEL`: Dockerfile, context files, build arguments, the ID of the image it starts from,
the normalization);
an image whose digest matches is reused without a build. A built image is normalized (`archive`)
before it is tagged, so the same inputs give the same image ID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services.devtools.images import archive
from services.devtools.images.lock import INSTALLER_LOCK, LOCK
from services.devtools.images.tags import (
    APP_IMAGE,
    BASE_IMAGE,
    DAPRD_IMAGE,
    DEVICE_DAPRD_IMAGE,
    EPOCH,
    INPUTS_LABEL,
    MOSQUITTO_IMAGE,
    PYTHON_IMAGE,
    REDIS_IMAGE,
    ROOT,
    VERSION,
)

SOURCES = ROOT / "images"
ROOTFS_SCRIPT = ROOT / "scripts" / "build-rootfs.sh"
GLIBC_MINOR = 36
WHEEL_PLATFORM = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]
for _platform in [f"manylinux_2_{m}_x86_64" for m in range(GLIBC_MINOR, 4, -1)] + ["manylinux2014_x86_64"]:
    WHEEL_PLATFORM += ["--platform", _platform]
"""CPython 3.11 on amd64 with Debian bookworm's glibc (2.36): every manylinux tag that runs there
(pip does not widen an explicit `--platform` by itself)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_client() -> tuple[str, dict[str, str]]:
    """A docker client that builds with BuildKit (RUN --mount), and its environment: one with
    the buildx plugin, or a client older than 23 (BuildKit built in, Debian's docker.io)."""
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and Path(c).exists()]
    for client in dict.fromkeys(candidates):
        if subprocess.run([client, "buildx", "version"], capture_output=True).returncode == 0:
            return client, {"DOCKER_BUILDKIT": "1"}
        found = subprocess.run([client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        major = re.match(r"(\d+)\.", found.stdout.strip())
        if major and int(major.group(1)) < 23:
            return client, {"DOCKER_BUILDKIT": "1"}
    raise RuntimeError("no docker client that builds with BuildKit: install docker.io or the buildx plugin")


class Docker:
    """The docker CLI, as the builder uses it."""

    def __init__(self) -> None:
        self.client, self.build_env = build_client()

    def run(self, *args: str) -> str:
        result = subprocess.run([self.client, *args], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"docker {' '.join(args[:3])}: {result.stderr.strip()[-2000:]}")
        return result.stdout.strip()

    def inspect(self, ref: str) -> dict[str, Any] | None:
        result = subprocess.run([self.client, "image", "inspect", ref], capture_output=True, text=True)
        if result.returncode:
            return None
        found: dict[str, Any] = json.loads(result.stdout)[0]
        return found

    def build(self, spec: Spec, context: Path, no_cache: bool) -> str:
        """Build offline; the (not yet normalized) image's ID."""
        dockerfile = spec.dockerfile
        command = [self.client, "build", "--network=none", "-q", "-f", str(dockerfile)]
        command += ["--no-cache"] if no_cache else []
        for key, value in spec.args.items():
            command += ["--build-arg", f"{key}={value}"]
        for key, value in spec.labels.items():
            command += ["--label", f"{key}={value}"]
        result = subprocess.run(
            [*command, str(context)], capture_output=True, text=True, env={**os.environ, **self.build_env}
        )
        if result.returncode:
            raise RuntimeError(f"building {spec.name} failed:\n{result.stderr.strip()[-4000:]}")
        return result.stdout.strip().splitlines()[-1]

    def load(self, write: Callable[[IO[bytes]], str]) -> str:
        """`docker load` what `write` streams; the ID `write` returns."""
        loading = subprocess.Popen(
            [self.client, "load", "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert loading.stdin is not None and loading.stderr is not None
        try:
            image_id = write(loading.stdin)
        finally:
            loading.stdin.close()
        refused = loading.stderr.read().decode(errors="replace").strip()
        if loading.wait():
            raise RuntimeError(f"docker load failed: {refused}")
        return image_id

    def normalized(
        self, image_id: str, tag: str, labels: dict[str, str], work: Path, parent: str | None, load: bool = True
    ) -> str:
        """`docker save` the image, normalize it and load it as `tag` (or only compute the ID).
        The `parent` image's layers are normal already and left out of the archive; a daemon that
        refuses an archive without them gets a complete one."""
        found = self.inspect(parent) if parent else None
        layers = tuple(found["RootFS"]["Layers"]) if found else ()
        try:
            return self._normalized(image_id, tag, labels, work, layers, load, complete=not layers)
        except RuntimeError:
            if not layers or not load:
                raise
            return self._normalized(image_id, tag, labels, work, layers, load, complete=True)

    def _normalized(
        self,
        image_id: str,
        tag: str,
        labels: dict[str, str],
        work: Path,
        parent: tuple[str, ...],
        load: bool,
        complete: bool,
    ) -> str:
        saving = subprocess.Popen([self.client, "save", image_id], stdout=subprocess.PIPE)
        assert saving.stdout is not None

        def write(out: IO[bytes]) -> str:
            assert saving.stdout is not None
            return archive.normalize(saving.stdout, out, tag, EPOCH, labels, work, parent, complete)

        try:
            if load:
                result = self.load(write)
            else:
                with open(os.devnull, "wb") as sink:
                    result = write(sink)
        finally:
            saving.stdout.close()
        if saving.wait():
            raise RuntimeError(f"docker save {image_id} failed")
        return result


@dataclass(frozen=True)
class Inputs:
    """What the images are built from, fetched into the cache."""

    rootfs: Path
    rootfs_digest: str
    debs: Path
    wheels: Path
    healthcheck: Path
    daprd: Path
    device_daprd: Path


@dataclass(frozen=True)
class Spec:
    """One image: its name, context files (context path -> source), build arguments and labels;
    its Dockerfile is `images/<source>/` (default: its name)."""

    name: str
    tag: str
    parent: str | None
    files: dict[str, Path]
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def dockerfile(self) -> Path:
        return SOURCES / (self.source or self.name) / "Dockerfile"


@dataclass(frozen=True)
class Outcome:
    name: str
    tag: str
    image_id: str
    size: int
    seconds: float
    built: bool


def upstream_version(debs: Path, package: str) -> str:
    """The upstream version of `package` among the .deb files (no epoch, no Debian revision)."""
    for deb in debs.glob(f"{package}_*.deb"):
        full = urllib.parse.unquote(deb.name.split("_")[1])
        return full.split(":")[-1].rsplit("-", 1)[0].split("+")[0]
    raise FileNotFoundError(f"no {package} package in {debs}")


def _fresh_dir(parent: Path, prefix: str, key: str) -> Path:
    """`parent/prefix-key`; other keys' directories of the same prefix are removed (stale)."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{prefix}-*"):
        if stale.name != f"{prefix}-{key}":
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return parent / f"{prefix}-{key}"


def fetch(cache: Path, daprd: Path, device_daprd: Path) -> Inputs:
    """Fetch (or find in the cache) every input: rootfs and .deb sets, wheels, the health check."""
    rootfs_key = digest_of(ROOTFS_SCRIPT.read_bytes() + os.environ.get("DEBIAN_MIRROR", "").encode())[:16]
    rootfs_dir = _fresh_dir(cache, "rootfs", rootfs_key)
    if not (rootfs_dir / "rootfs.sha256").exists():
        say("fetching the Debian root filesystem and packages (mmdebstrap)")
        subprocess.run(
            [str(ROOTFS_SCRIPT), str(rootfs_dir)], check=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
        )
        (rootfs_dir / "rootfs.sha256").write_text(file_digest(rootfs_dir / "rootfs.tar"))
    wheels_key = digest_of(LOCK.read_bytes() + INSTALLER_LOCK.read_bytes())[:16]
    wheels = _fresh_dir(cache, "wheels", wheels_key)
    if not wheels.exists():
        say("downloading the locked wheels")
        partial = wheels.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", *WHEEL_PLATFORM),
                *("-d", str(partial), "-r", str(LOCK), "-r", str(INSTALLER_LOCK)),
            ],
            check=True,
        )
        partial.rename(wheels)
    source = SOURCES / "daprd" / "healthcheck"
    check_key = digest_of(b"".join(p.read_bytes() for p in sorted(source.iterdir())))[:16]
    healthcheck = _fresh_dir(cache / "bin", "healthcheck", check_key)
    if not healthcheck.exists():
        say("building the daprd image's health check")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
        out = healthcheck.with_suffix(".partial")
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."], cwd=source, check=True, env=env
        )
        out.rename(healthcheck)
    digest = (rootfs_dir / "rootfs.sha256").read_text().strip()
    return Inputs(rootfs_dir / "rootfs.tar", digest, rootfs_dir / "debs", wheels, healthcheck, daprd, device_daprd)


def revision() -> str:
    """The commit the code comes from (`-dirty` when `services/` differs from it)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "services"], cwd=ROOT, capture_output=True, text=True)
    return (head or "unknown") + ("-dirty" if changed.stdout.strip() else "")


def _labels(title: str, description: str, version: str, base: str | None, **more: str) -> dict[str, str]:
    """An image's OCI labels (set by the builder: the Dockerfiles carry none)."""
    labels = {
        "title": title,
        "description": description,
        "version": version,
        "created": archive.timestamp(EPOCH),
        **({"base.name": base} if base else {}),
        **more,
    }
    return {f"org.opencontainers.image.{key}": value for key, value in labels.items()}


def specs(inputs: Inputs) -> list[Spec]:
    epoch = {"SOURCE_DATE_EPOCH": str(EPOCH)}
    debs = inputs.debs
    daprd_version = subprocess.run([str(inputs.daprd), "--version"], capture_output=True, text=True).stdout.strip()
    device_version = subprocess.run([str(inputs.device_daprd), "--version"], capture_output=True, text=True)
    pip_wheel = next(inputs.wheels.glob("pip-*.whl")).name
    python_files = {
        "debs/python": debs / "python",
        "debs/build": debs / "build",
        "wheels": inputs.wheels,
        "requirements.lock": LOCK,
    }
    daprd_files = {
        "daprd": inputs.daprd,
        "healthcheck": inputs.healthcheck,
        "passwd": SOURCES / "daprd" / "passwd",
        "group": SOURCES / "daprd" / "group",
        "ca-certificates.crt": inputs.rootfs.with_name("ca-certificates.crt"),
    }
    device_daprd_files = {**daprd_files, "daprd": inputs.device_daprd}
    python = upstream_version(debs / "python", "python3.11")
    mosquitto_files = {"debs/mosquitto": debs / "mosquitto", "mosquitto.conf": SOURCES / "mosquitto" / "mosquitto.conf"}
    return [
        Spec(
            "python",
            PYTHON_IMAGE,
            BASE_IMAGE,
            python_files,
            {**epoch, "PIP_WHEEL": pip_wheel},
            _labels(
                "twinfleet-python", "Debian's Python and Twinfleet's locked runtime dependencies", python, BASE_IMAGE
            ),
        ),
        Spec(
            "app",
            APP_IMAGE,
            PYTHON_IMAGE,
            {"services": ROOT / "services"},
            epoch,
            _labels(
                "twinfleet-app",
                "Twinfleet's Dapr apps and device agent; the first argument names the app",
                VERSION,
                PYTHON_IMAGE,
                revision=revision(),
            ),
        ),
        Spec(
            "daprd",
            DAPRD_IMAGE,
            None,
            daprd_files,
            epoch,
            _labels(
                "daprd",
                "The Dapr sidecar (stable components) built from its Go module",
                daprd_version,
                None,
                source="https://github.com/dapr/dapr",
            ),
        ),
        Spec(
            "daprd-device",
            DEVICE_DAPRD_IMAGE,
            None,
            device_daprd_files,
            epoch,
            _labels(
                "daprd-device",
                "The device agent's Dapr sidecar: only the MQTT pub/sub and SQLite state components",
                device_version.stdout.strip(),
                None,
                source="https://github.com/dapr/dapr",
            ),
            source="daprd",
        ),
        Spec(
            "redis",
            REDIS_IMAGE,
            BASE_IMAGE,
            {"debs/redis": debs / "redis"},
            epoch,
            _labels("redis", "Debian's redis-server", upstream_version(debs / "redis", "redis-server"), BASE_IMAGE),
        ),
        Spec(
            "mosquitto",
            MOSQUITTO_IMAGE,
            BASE_IMAGE,
            mosquitto_files,
            epoch,
            _labels(
                "mosquitto",
                "Debian's mosquitto broker and clients",
                upstream_version(debs / "mosquitto", "mosquitto"),
                BASE_IMAGE,
            ),
        ),
    ]


def _place(source: Path, target: Path, cache: Path) -> None:
    """Files from the cache are hard-linked (free), anything else copied (its times are reset)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc" or path.is_dir():
                continue
            _place(path, target / path.relative_to(source), cache)
        return
    if source.is_relative_to(cache):
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


def assemble(spec: Spec, context: Path, cache: Path) -> None:
    """The build context, fresh, every file's time set to the epoch (COPY keeps times)."""
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name, source in spec.files.items():
        _place(source, context / name, cache)
    for path in [context, *context.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


@contextmanager
def keyed(staging: Path, key: str) -> Iterator[Path]:
    """The assembled context, moved for the build to a directory named by its inputs' digest.

    BuildKit keeps the context it was last sent from each directory and re-sends only the files
    whose metadata (size, time) changed; with every time set to the epoch, an edit that keeps a
    file's size (`request.json()` → `request.body()`) would reach the build stale. One directory
    per inputs digest means a changed input is never compared against another build's copy."""
    context = staging.with_name(f"{staging.name}-{key[:16]}")
    shutil.rmtree(context, ignore_errors=True)
    staging.rename(context)
    try:
        yield context
    finally:
        shutil.rmtree(context, ignore_errors=True)


def inputs_digest(spec: Spec, context: Path, parent_id: str) -> str:
    """The digest of everything the image is built from."""
    digest = hashlib.sha256()
    dockerfile = spec.dockerfile
    digest.update(json.dumps([spec.name, spec.tag, parent_id, spec.args, spec.labels]).encode())
    digest.update(Path(archive.__file__).read_bytes())  # how the image is normalized
    digest.update(dockerfile.read_bytes())
    for path in sorted(context.rglob("*")):
        if path.is_file():
            entry = f"{path.relative_to(context)}\0{path.stat().st_mode & 0o7777:o}\0{file_digest(path)}\n"
            digest.update(entry.encode())
    return digest.hexdigest()


class Builder:
    def __init__(self, cache: Path, daprd: Path, device_daprd: Path, no_cache: bool = False) -> None:
        self.cache = cache
        self.daprd = daprd
        self.device_daprd = device_daprd
        self.no_cache = no_cache
        self.docker = Docker()

    def base(self, inputs: Inputs) -> Outcome:
        """The root filesystem as a one-layer image; loaded when its (content-derived) ID differs."""
        started = time.monotonic()
        env = ["LANG=C.UTF-8"]
        expected = archive.image_id(archive.rootfs_config(inputs.rootfs_digest, inputs.rootfs.name, EPOCH, env))
        found = self.docker.inspect(BASE_IMAGE)
        built = found is None or found["Id"] != expected
        if built:
            self.docker.load(
                lambda out: archive.rootfs_image(inputs.rootfs, inputs.rootfs_digest, BASE_IMAGE, EPOCH, env, out)
            )
        return self._outcome("base", BASE_IMAGE, started, built)

    def image(self, spec: Spec) -> Outcome:
        started = time.monotonic()
        context = self.cache / "contexts" / spec.name
        assemble(spec, context, self.cache)
        parent = self.docker.inspect(spec.parent) if spec.parent else None
        key = inputs_digest(spec, context, parent["Id"] if parent else "")
        found = self.docker.inspect(spec.tag)
        labels = (found or {}).get("Config", {}).get("Labels") or {}
        built = self.no_cache or labels.get(INPUTS_LABEL) != key
        if built:
            with keyed(context, key) as unique:
                raw = self.docker.build(spec, unique, self.no_cache)
            self.docker.normalized(raw, spec.tag, {INPUTS_LABEL: key}, self.cache / "tmp", spec.parent)
            self.docker.run("image", "rm", raw)
        return self._outcome(spec.name, spec.tag, started, built)

    def verify(self, spec: Spec) -> tuple[str, str]:
        """Build `spec` again from nothing (no cache); (the tagged image's ID, the rebuilt one's)."""
        context = self.cache / "contexts" / spec.name
        assemble(spec, context, self.cache)
        current = self.docker.inspect(spec.tag)
        if current is None:
            raise RuntimeError(f"{spec.tag} is not built yet")
        key = current["Config"]["Labels"][INPUTS_LABEL]
        parent = self.docker.inspect(spec.parent) if spec.parent else None
        with keyed(context, inputs_digest(spec, context, parent["Id"] if parent else "")) as unique:
            raw = self.docker.build(spec, unique, no_cache=True)
        try:
            rebuilt = self.docker.normalized(
                raw, spec.tag, {INPUTS_LABEL: key}, self.cache / "tmp", spec.parent, load=False
            )
        finally:
            self.docker.run("image", "rm", raw)
        return str(current["Id"]), rebuilt

    def _outcome(self, name: str, tag: str, started: float, built: bool) -> Outcome:
        found = self.docker.inspect(tag)
        assert found is not None
        return Outcome(name, tag, found["Id"], int(found["Size"]), time.monotonic() - started, built)

    def build_all(self) -> list[Outcome]:
        inputs = fetch(self.cache, self.daprd, self.device_daprd)
        ca = inputs.rootfs.with_name("ca-certificates.crt")
        if not ca.exists():  # the daprd image takes the base's CA bundle
            subprocess.run(
                ["tar", "-xOf", str(inputs.rootfs), "./etc/ssl/certs/ca-certificates.crt"],
                stdout=ca.open("wb"),
                check=True,
            )
        outcomes = [self.base(inputs)]
        outcomes += [self.image(spec) for spec in specs(inputs)]
        return outcomes

    def verify_all(self, names: list[str]) -> list[tuple[str, str, str]]:
        """(image, tagged ID, rebuilt ID) for each image named (all but base when empty)."""
        inputs = fetch(self.cache, self.daprd, self.device_daprd)
        chosen = [s for s in specs(inputs) if not names or s.name in names]
        return [(spec.tag, *self.verify(spec)) for spec in chosen]

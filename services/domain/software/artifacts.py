"""Firmware artifacts, pure: what an uploaded artifact is, its id and version rules, and how its
bytes are named as chunk objects (stores without one object per artifact).
"""

from __future__ import annotations

import re
from enum import StrEnum

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel

from services.domain.errors import bad_request

ARTIFACT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


DEFAULT_CHUNK_SIZE = 1 << 20
"""Through a binding, artifacts are stored as objects of this many bytes: bindings move whole
objects, so a chunk is what the service holds in memory at once, whatever the artifact's size."""


class ArtifactStatus(StrEnum):
    UPLOADING = "uploading"
    READY = "ready"


class Artifact(BaseModel):
    """One uploaded artifact: its bytes (chunk objects or one blob), their length and digest. It is
    released while the current targets metadata lists it."""

    id: str
    name: str
    version: str
    length: int = 0
    sha256: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    status: ArtifactStatus = ArtifactStatus.UPLOADING
    created: float

    @property
    def chunks(self) -> int:
        return -(-self.length // self.chunk_size)


def check_artifact_id(value: str) -> str:
    if not ARTIFACT_ID.match(value):
        raise bad_request("artifact id must be 1..64 of a-z 0-9 . _ - starting with a letter or digit")
    return value


def parse_version(value: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion:
        raise bad_request(f"version {value!r} is not a version (PEP 440 / semver-like, e.g. 1.4.2)") from None


def chunk_name(artifact_id: str, index: int) -> str:
    return f"artifacts/{artifact_id}/{index:08d}.bin"

"""The firmware app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.domain.software.artifacts import DEFAULT_CHUNK_SIZE
from services.platform.settings import Settings


class FirmwareSettings(Settings):
    firmware_chunk_size: int = DEFAULT_CHUNK_SIZE
    """Bytes per stored chunk object: what an upload or a download holds in memory at a time."""
    firmware_max_artifact_bytes: int = 16 << 30
    """Uploads beyond this are refused with 413 (and what was stored of them removed)."""
    firmware_downloads_per_device: int = 2
    """Downloads one device may have running at once; one more is a 429."""
    firmware_metadata_ttl: int = 365 * 24 * 3600
    """Seconds signed targets metadata stays valid when the upload names no expiry."""
    firmware_credential_ttl: int = 900
    """Seconds a temporary download credential is valid."""
    firmware_cache_chunks: int = 64
    """Chunks kept in memory for concurrent downloads of the same artifact (LRU)."""
    firmware_name_key: str = "fileName"
    """The binding's metadata key naming an object: `fileName` (localstorage), `blobName` (Azure
    Blob), `key` (AWS S3)."""
    firmware_public_url: str = ""
    """This service's address as devices reach it (the base of minted URLs); empty: the address
    the request came in on."""
    rollout_url: str = ""
    """The rollout app's base URL; empty: Dapr service invocation (see `twin_store_url`)."""
    twin_store_url: str = ""
    """The twin-store's base URL; empty: Dapr service invocation. Local stacks set both: daprd's
    mDNS resolution spans the machine and would mix up stacks side by side."""


@lru_cache(maxsize=1)
def get_firmware_settings() -> FirmwareSettings:
    return FirmwareSettings()

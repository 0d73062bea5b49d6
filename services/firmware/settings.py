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
    firmware_snapshot_ttl: int = 7 * 24 * 3600
    """Seconds the suite's snapshot metadata is valid (re-signed when half of it is left)."""
    firmware_timestamp_ttl: int = 24 * 3600
    """Seconds the suite's timestamp metadata is valid (re-signed when half of it is left): how
    long a device can be kept on stale metadata by a freeze attack."""
    firmware_metadata_refresh: float = 60.0
    """Seconds between checks whether snapshot or timestamp need re-signing."""
    firmware_credential_ttl: int = 900
    """Seconds a temporary download credential is valid."""
    firmware_url_ttl_max: int = 24 * 3600
    """The longest a minted download URL may be valid."""
    firmware_credential_bind_ip: bool = False
    """Bind a store credential to the address the device asked from (`sip`); off by default, as
    devices behind NAT or proxies may reach the store from another address."""
    firmware_cache_chunks: int = 64
    """Chunks kept in memory for concurrent downloads of the same artifact (LRU)."""
    firmware_write_in_flight: int = 4
    """Chunks, blocks or parts written at once by an upload (memory: that many plus one)."""
    firmware_read_ahead: int = 4
    """Chunks fetched ahead of a proxied download (`binding` store)."""
    firmware_store: str = "binding"
    """Where artifact bytes live: `binding` (chunk objects through the Dapr binding, proxied
    downloads), `azure` (Azure Blob / Azurite, SAS URLs) or `s3` (S3-compatible, presigned URLs)."""
    firmware_block_size: int = 8 << 20
    """`azure`/`s3`: bytes per staged block or multipart part (S3: at least 5 MiB)."""
    firmware_store_endpoint: str = ""
    """`azure`: the blob endpoint (`https://<account>.blob.core.windows.net`, Azurite's
    `http://127.0.0.1:10000/<account>`); `s3`: the endpoint URL (empty: AWS)."""
    firmware_store_account: str = ""
    """`azure`: the storage account; `s3`: the access key id (the secret is `artifact-store-key`)."""
    firmware_store_container: str = "artifacts"
    """`azure`: the container; `s3`: the bucket."""
    firmware_store_region: str = ""
    """`s3`: the region."""
    firmware_store_public_url: str = ""
    """`azure`: the blob endpoint as devices reach it (the base of SAS URLs; default the endpoint)."""
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

"""Who may download, and how: the two ways of the seed "Software Update", minted here.

- **Object store** (`azure`, `s3`): the URL is the store's own — a SAS (read-only, one blob,
  short expiry, optional IP range `sip`) or an S3 presigned URL — and the temporary credential is a
  short-lived store credential scoped to that one blob, given only to a device that proves who it
  is and whose twin desires the artifact. The app never carries the bytes.
- **Proxied** (`binding`, stores that cannot pre-sign): an HMAC pre-signed URL or a temporary
  credential plus the device's own credentials (every refusal a 403 before the first byte), at
  most `firmware_downloads_per_device` at once per device (429), HTTP Range for resuming, and how
  far each device's last download of an artifact has come.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping

from services.contracts.firmware import DownloadProgress, MintedCredential, MintedUrl
from services.domain.errors import forbidden, too_many_requests
from services.domain.software.artifacts import Artifact
from services.domain.software.grants import Grant, check_credential, check_device, check_presigned, mint_credential
from services.domain.software.ranges import ByteRange
from services.domain.software.repository import utc
from services.domain.software.twin_key import download_url
from services.firmware.metrics import ACTIVE, BYTES_SERVED
from services.firmware.storage import Keys
from services.firmware.stores import ArtifactStore
from services.platform.names import DOWNLOAD_URL_KEY, FLEET_SECRET

PROGRESS_KEPT = 10_000
"""Downloads whose progress is remembered (the oldest are forgotten; devices report their own)."""


def device_login(authorization: str | None) -> tuple[str, str]:
    """(device id, password) from HTTP Basic credentials; 403 when absent or malformed (FastAPI's
    `HTTPBasic` would answer 401, and a device is refused with a 403 saying why)."""
    if not authorization or not authorization.lower().startswith("basic "):
        raise forbidden("device credentials required (HTTP Basic: device id and password)")
    try:
        device_id, password = base64.b64decode(authorization[6:]).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        raise forbidden("malformed device credentials") from None
    return device_id, password


class Downloads:
    """Minting grants; for the proxied path, downloads in flight per device and their progress."""

    def __init__(self, keys: Keys, store: ArtifactStore, per_device: int, public_url: str) -> None:
        self._keys = keys
        self.store = store
        self.per_device = per_device
        self.public_url = public_url
        self.running: dict[str, int] = {}
        self.progress: OrderedDict[tuple[str, str], DownloadProgress] = OrderedDict()
        """The last download per (device, artifact), newest last; bounded to `PROGRESS_KEPT`."""

    async def _url_key(self) -> bytes:
        return (await self._keys.get(DOWNLOAD_URL_KEY)).encode()

    async def authenticate(self, authorization: str | None) -> str:
        """The device whose own credentials these are (403 otherwise)."""
        device_id, password = device_login(authorization)
        check_device(await self._keys.get(FLEET_SECRET), device_id, password)
        return device_id

    async def url(self, artifact: Artifact, device_id: str, ttl: int, ip: str | None, base: str) -> MintedUrl:
        """A download URL for one device: the store's own, or an HMAC URL on this app."""
        grant = Grant(device_id, artifact.id, int(time.time()) + ttl, ip)
        if self.store.presigns:
            return MintedUrl(url=await self.store.url(artifact, utc(grant.expires), ip), expires=grant.expires)
        return MintedUrl(url=download_url(self.public_url or base, await self._url_key(), grant), expires=grant.expires)

    async def credential(self, artifact: Artifact, device_id: str, ttl: int, ip: str | None) -> MintedCredential:
        """A temporary credential for an authenticated device (the caller checked its twin)."""
        grant = Grant(device_id, artifact.id, int(time.time()) + ttl, ip)
        if self.store.presigns:
            url = await self.store.url(artifact, utc(grant.expires), ip)
            return MintedCredential(credential=url.partition("?")[2], url=url, expires=grant.expires)
        return MintedCredential(credential=mint_credential(await self._url_key(), grant), expires=grant.expires)

    async def grant(
        self,
        artifact_id: str,
        params: Mapping[str, str],
        client_ip: str | None,
        authorization: str | None,
        credential: str | None,
    ) -> Grant:
        """The grant a proxied download presents: a pre-signed URL's, or a credential's for the
        device that authenticates with it; 403 saying why otherwise."""
        key = await self._url_key()
        now = time.time()
        if "signature" in params:
            return check_presigned(key, artifact_id, params, client_ip, now)
        if credential is not None:
            device_id = await self.authenticate(authorization)
            return check_credential(key, credential, artifact_id, device_id, now)
        raise forbidden("a download needs a pre-signed URL or a temporary credential")

    def start(self, device_id: str) -> None:
        if self.running.get(device_id, 0) >= self.per_device:
            raise too_many_requests(f"device {device_id} already has {self.per_device} download(s) running")
        self.running[device_id] = self.running.get(device_id, 0) + 1
        ACTIVE.inc()

    def end(self, device_id: str) -> None:
        left = self.running.get(device_id, 1) - 1
        if left:
            self.running[device_id] = left
        else:
            self.running.pop(device_id, None)
        ACTIVE.dec()

    def track(self, device_id: str, artifact: Artifact, part: ByteRange) -> DownloadProgress:
        """A fresh progress entry for this download (replacing the device's last one)."""
        slot = (device_id, artifact.id)
        entry = DownloadProgress(device_id=device_id, artifact=artifact.id, start=part.start, sent=0)
        self.progress[slot] = entry
        self.progress.move_to_end(slot)
        while len(self.progress) > PROGRESS_KEPT:
            self.progress.popitem(last=False)
        return entry

    async def body(self, artifact: Artifact, part: ByteRange, entry: DownloadProgress) -> AsyncIterator[bytes]:
        """The bytes of `part`, from the store (chunks fetched ahead), counted into `entry`."""
        if not artifact.length:
            return
        async for data in self.store.read(artifact, part):
            BYTES_SERVED.inc(len(data))
            entry.sent += len(data)
            yield data

    def of(self, artifact_id: str) -> list[DownloadProgress]:
        return [p for (_, a), p in self.progress.items() if a == artifact_id]

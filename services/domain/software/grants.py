"""Who may download an artifact, pure: the two ways of the seed "Software Update".

- **Pre-signed URL**: query parameters `device`, `expires`, optional `ip`, and `signature`, an
  HMAC-SHA256 over the artifact, the device, the expiry and the IP. Bound to one device and one
  artifact, expiring, and (when `ip` is set) usable only from that address. The delta app mints a
  fresh one into every delta that carries an artifact reference (late binding).
- **Temporary credential**: a device proves who it is with its own credentials and gets a short-lived
  bearer token scoped to one artifact. Downloading with it also needs the device's credentials, so a
  token taken from device A is useless to device B.

Both are checked before a single byte is served; any failure is a 403 that says why. Every MAC
has its purpose in the signed message, so a URL signature is never a valid token and vice versa.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from services.domain.errors import forbidden


@dataclass(frozen=True, slots=True)
class Grant:
    device_id: str
    artifact: str
    expires: int
    ip: str | None = None


def _mac(key: bytes, purpose: str, grant: Grant) -> str:
    message = "\n".join((purpose, grant.artifact, grant.device_id, str(grant.expires), grant.ip or ""))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


# -- pre-signed URLs ---------------------------------------------------------------------------
def presign(key: bytes, grant: Grant) -> dict[str, str]:
    """The query parameters of a pre-signed download URL for `grant`."""
    params = {"device": grant.device_id, "expires": str(grant.expires)}
    if grant.ip:
        params["ip"] = grant.ip
    params["signature"] = _mac(key, "url-v1", grant)
    return params


def check_presigned(key: bytes, artifact: str, params: Mapping[str, str], client_ip: str | None, now: float) -> Grant:
    """The grant a pre-signed URL carries, or 403 (tampered, expired, other artifact, other IP)."""
    try:
        grant = Grant(str(params["device"]), artifact, int(params["expires"]), params.get("ip") or None)
        signature = str(params["signature"])
    except (KeyError, ValueError):
        raise forbidden("a download URL needs device, expires and signature") from None
    if not hmac.compare_digest(signature, _mac(key, "url-v1", grant)):
        raise forbidden("download URL signature does not match (tampered, or for another artifact)")
    if grant.expires <= now:
        raise forbidden("download URL expired")
    if grant.ip is not None and grant.ip != client_ip:
        raise forbidden("download URL is bound to another address")
    return grant


# -- temporary credentials ---------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_credential(key: bytes, grant: Grant) -> str:
    """A bearer token `payload.mac`, the payload naming device, artifact and expiry."""
    payload = {"device": grant.device_id, "artifact": grant.artifact, "expires": grant.expires}
    return f"{_b64(json.dumps(payload, separators=(',', ':')).encode())}.{_mac(key, 'credential-v1', grant)}"


def check_credential(key: bytes, token: str, artifact: str, device_id: str, now: float) -> Grant:
    """The grant a temporary credential carries, for `device_id` (already authenticated) and
    `artifact`, or 403."""
    try:
        encoded, mac = token.split(".", 1)
        payload = json.loads(_unb64(encoded))
        grant = Grant(str(payload["device"]), str(payload["artifact"]), int(payload["expires"]))
    except (ValueError, KeyError, TypeError):
        raise forbidden("malformed download credential") from None
    if not hmac.compare_digest(mac, _mac(key, "credential-v1", grant)):
        raise forbidden("download credential signature does not match (tampered)")
    if grant.expires <= now:
        raise forbidden("download credential expired")
    if grant.device_id != device_id:
        raise forbidden(f"download credential was issued to another device, not {device_id}")
    if grant.artifact != artifact:
        raise forbidden(f"download credential is scoped to artifact {grant.artifact}, not {artifact}")
    return grant


# -- device credentials ------------------------------------------------------------------------
def device_password(fleet_secret: str, device_id: str) -> str:
    """A device's password, derived from the fleet secret: the broker and the firmware service
    check the same credentials without a password table of their own."""
    return hmac.new(fleet_secret.encode(), device_id.encode(), hashlib.sha256).hexdigest()[:32]


def check_device(fleet_secret: str, device_id: str, password: str) -> None:
    if not hmac.compare_digest(password.encode(), device_password(fleet_secret, device_id).encode()):
        raise forbidden("device credentials do not match")

"""Who the local suite trusts: an identity provider in miniature for `make run` and the tests (an
ES256 key of the stack's own, its JWKS as a file the apps read, tokens minted for the operator and
for each app's own identity), so the apps check tokens exactly as they check Entra ID's in a
cluster. A test may hand the stack a real OIDC provider instead (ORY Hydra, `tests/support/hydra.py`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.platform.names import COMMANDS_APP, CONSOLE_APP, DELTA_APP, EVENTS_APP, FIRMWARE_APP, ROLLOUT_APP

AUDIENCE = "twinfleet"
APP_ROLES: dict[str, list[str]] = {
    ROLLOUT_APP: ["operator"],
    DELTA_APP: ["operator"],
    FIRMWARE_APP: ["viewer"],
    COMMANDS_APP: ["viewer"],
    EVENTS_APP: ["viewer"],
    CONSOLE_APP: ["viewer"],
}
"""What each app's own identity may do when it calls another app: the rollout app writes twins
(batch) and reads the fleet; the delta app mints download URLs for devices; the firmware app
reads twins and configurations; commands and events
read a device's tags to check a scoped caller; the console reads the fleet once at start (its index)."""


class Identity(Protocol):
    """An identity provider as the stack uses it."""

    def app_env(self, app: str) -> dict[str, str]:
        """The auth settings of one app: whom to trust, and its own credential."""
        ...

    def token(self, subject: str, roles: list[str]) -> str:
        """A bearer token for `subject` holding `roles`."""
        ...


class LocalIssuer:
    """The stack's own issuer: a key pair in `directory`, tokens valid for `ttl` seconds."""

    def __init__(self, directory: Path, ttl: int = 30 * 24 * 3600) -> None:
        self.directory = directory
        self.ttl = ttl
        self.issuer = f"urn:twinfleet:local:{directory.resolve()}"
        key_file = directory / "issuer-key.pem"
        if key_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self._key = ec.generate_private_key(ec.SECP256R1())
            pem = self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            key_file.write_bytes(pem)
            key_file.chmod(0o600)
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key()))
        self.kid = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(public, sort_keys=True)).hex[:16]
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "ES256"}]}))

    def app_env(self, app: str) -> dict[str, str]:
        env = {"TWINFLEET_AUTH_ISSUER": self.issuer, "TWINFLEET_AUTH_JWKS_URL": f"file://{self.jwks_file}"}
        if app in APP_ROLES:
            env["TWINFLEET_SERVICE_TOKEN"] = self.token(f"app:{app}", APP_ROLES[app], client_id=app)
        return env

    def token(self, subject: str, roles: list[str], *, ttl: int | None = None, client_id: str = "") -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": [AUDIENCE],
            "iat": now,
            "nbf": now,
            "exp": now + (ttl if ttl is not None else self.ttl),
            "roles": roles,
            "client_id": client_id or subject,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

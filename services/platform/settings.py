"""One settings loader for every app (environment variables, prefix `TWINFLEET_`): the knobs every
app shares; each app's own knobs are in its `settings.py`, on top of these."""

from __future__ import annotations

import socket
from dataclasses import fields

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts.topics import TopicProfile, profile
from services.domain.twin.limits import Limits

_LIMITS = Limits()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINFLEET_", extra="ignore")

    topic_profile: str = "default"
    """The device topic layout: `default` or `aws` (`services.contracts.topics`)."""
    dapr_grpc_port: int = Field(default=50001, validation_alias="DAPR_GRPC_PORT")
    """This app's sidecar ports: the standard Dapr variables, set by the injector on Kubernetes."""
    dapr_http_port: int = Field(default=3500, validation_alias="DAPR_HTTP_PORT")
    app_api_token: str = Field(default="", validation_alias="APP_API_TOKEN")
    """What this app's sidecar sends with every call (`dapr-api-token`): the app takes sidecar-only
    and operator routes only with it, so a call to the app's port that bypasses the sidecar is
    refused. Set by the injector (`dapr.io/app-token-secret`) on Kubernetes."""
    dapr_api_token: str = Field(default="", validation_alias="DAPR_API_TOKEN")
    """What the sidecar's own API asks of this app (`dapr.io/api-token-secret`)."""

    auth_issuer: str = ""
    """The OIDC issuer whose tokens are taken (`iss`, compared exactly; Entra ID:
    `https://login.microsoftonline.com/<tenant>/v2.0`). Empty: only API keys authenticate."""
    auth_audience: str = "twinfleet"
    """What a token's `aud` must hold (Entra ID: the API's application ID URI or client id)."""
    auth_jwks_url: str = ""
    """The issuer's signing keys; empty: `jwks_uri` from the issuer's discovery document."""
    auth_roles_claim: str = "roles"
    """The claim holding the principal's roles (Entra ID app roles: `roles`)."""
    auth_algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256")
    """Signature algorithms taken (never `none`, never HMAC)."""
    auth_leeway_seconds: float = 30.0
    """Clock skew allowed on `exp` and `nbf`."""
    service_token: str = ""
    """This app's own credential when it calls another app (a token or an API key); clusters
    use client credentials instead (`auth_client_id`, …)."""
    auth_client_id: str = ""
    auth_client_secret: str = ""
    auth_token_url: str = ""
    """Client credentials of this app's own identity (its calls to other apps)."""

    instance: str = Field(default_factory=socket.gethostname, validation_alias="POD_NAME")
    """This instance's name (the pod's on Kubernetes): the client id of an app's own persistent
    MQTT session, so a restarted instance resumes its session and gets what it had not acknowledged."""

    def topics(self) -> TopicProfile:
        return profile(self.topic_profile)

    def sidecar_args(self) -> tuple[str, int]:
        return f"127.0.0.1:{self.dapr_grpc_port}", self.dapr_http_port

    def sidecar_headers(self) -> dict[str, str]:
        """What a call to this app's sidecar carries (its API token, when it has one)."""
        return {"dapr-api-token": self.dapr_api_token} if self.dapr_api_token else {}


class LimitsSettings(Settings):
    """Settings of the apps that hold twins to the request limits (twin-store, rollout)."""

    # Request limits: defaults are the domain's (`Limits`), overridable per deployment.
    max_state_bytes: int = _LIMITS.max_state_bytes
    max_payload_bytes: int = _LIMITS.max_payload_bytes
    max_depth: int = _LIMITS.max_depth
    max_client_token_bytes: int = _LIMITS.max_client_token_bytes
    max_key_bytes: int = _LIMITS.max_key_bytes
    rate_per_second: float = _LIMITS.rate_per_second
    rate_burst: int = _LIMITS.rate_burst

    def limits(self) -> Limits:
        return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})

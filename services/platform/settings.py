"""One settings loader for every app (environment variables, prefix `TWINFLEET_`)."""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.domain.limits import Limits
from services.domain.topics import TopicProfile, profile

_LIMITS = Limits()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINFLEET_", extra="ignore")

    topic_profile: str = "default"
    dapr_grpc_port: int = Field(default=50001, validation_alias="DAPR_GRPC_PORT")
    """This app's sidecar ports: the standard Dapr variables, set by the injector on Kubernetes."""
    dapr_http_port: int = Field(default=3500, validation_alias="DAPR_HTTP_PORT")
    # Request limits: defaults are the domain's (`Limits`), overridable per deployment.
    max_state_bytes: int = _LIMITS.max_state_bytes
    max_payload_bytes: int = _LIMITS.max_payload_bytes
    max_depth: int = _LIMITS.max_depth
    max_client_token_bytes: int = _LIMITS.max_client_token_bytes
    max_key_bytes: int = _LIMITS.max_key_bytes
    rate_per_second: float = _LIMITS.rate_per_second
    rate_burst: int = _LIMITS.rate_burst
    batch_max: int = 256
    """Most requests the twin-store applies in one state round trip."""
    batch_wait_ms: float = 2.0
    """How long the twin-store waits to fill a batch once the first request arrived."""
    publish_concurrency: int = 256
    """Most device-broker publishes in flight at once (paces fan-out)."""

    def limits(self) -> Limits:
        return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})

    def topics(self) -> TopicProfile:
        return profile(self.topic_profile)

    def sidecar_args(self) -> tuple[str, int]:
        return f"127.0.0.1:{self.dapr_grpc_port}", self.dapr_http_port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""One settings loader for every app (environment variables, prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.domain.limits import Limits
from services.domain.topics import TopicProfile, profile


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINFLEET_", extra="ignore")

    topic_profile: str = "default"
    dapr_grpc_port: int = Field(default=50001, validation_alias="DAPR_GRPC_PORT")
    """This app's sidecar ports: the standard Dapr variables, set by the injector on Kubernetes."""
    dapr_http_port: int = Field(default=3500, validation_alias="DAPR_HTTP_PORT")
    max_state_bytes: int = 8192
    max_payload_bytes: int = 131072
    max_depth: int = 8
    rate_per_second: float = 20.0
    rate_burst: int = 40
    batch_max: int = 256
    """Most requests the twin-store applies in one state round trip."""
    batch_wait_ms: float = 2.0
    """How long the twin-store waits to fill a batch once the first request arrived."""
    publish_concurrency: int = 256
    """Most device-broker publishes in flight at once (paces fan-out)."""

    def limits(self) -> Limits:
        return Limits(
            max_state_bytes=self.max_state_bytes,
            max_payload_bytes=self.max_payload_bytes,
            max_depth=self.max_depth,
            rate_per_second=self.rate_per_second,
            rate_burst=self.rate_burst,
        )

    def topics(self) -> TopicProfile:
        return profile(self.topic_profile)

    def sidecar_args(self) -> tuple[str, int]:
        return f"127.0.0.1:{self.dapr_grpc_port}", self.dapr_http_port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

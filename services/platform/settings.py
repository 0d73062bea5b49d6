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

    instance: str = Field(default_factory=socket.gethostname, validation_alias="POD_NAME")
    """This instance's name (the pod's on Kubernetes): the client id of an app's own persistent
    MQTT session, so a restarted instance resumes its session and gets what it had not acknowledged."""

    def topics(self) -> TopicProfile:
        return profile(self.topic_profile)

    def sidecar_args(self) -> tuple[str, int]:
        return f"127.0.0.1:{self.dapr_grpc_port}", self.dapr_http_port


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

from __future__ import annotations

import pytest

from services.domain.twin.limits import Limits
from services.platform.settings import LimitsSettings


def test_limits_default_to_the_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LimitsSettings().limits() == Limits()


def test_limits_and_sidecar_ports_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINFLEET_MAX_STATE_BYTES", "1024")
    monkeypatch.setenv("TWINFLEET_RATE_PER_SECOND", "2.5")
    monkeypatch.setenv("DAPR_GRPC_PORT", "50123")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3600")
    settings = LimitsSettings()
    assert settings.limits().max_state_bytes == 1024 and settings.limits().rate_per_second == 2.5
    assert settings.sidecar_args() == ("127.0.0.1:50123", 3600)


def test_unknown_topic_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINFLEET_TOPIC_PROFILE", "nope")
    with pytest.raises(ValueError, match="unknown topic profile"):
        LimitsSettings().topics()

"""The twin-store's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import LimitsSettings


class TwinStoreSettings(LimitsSettings):
    batch_max: int = 256
    """Most requests the twin-store applies in one state round trip."""
    batch_wait_ms: float = 2.0
    """How long the twin-store waits to fill a batch once the first request arrived, while earlier
    batches are still being published (under load); an idle writer writes at once."""
    publish_concurrency: int = 256
    """Most device-broker replies of one batch in flight at once (up to `MAX_PUBLISHING_BATCHES`
    batches publish at a time)."""
    audit_retention_seconds: int = 90 * 24 * 3600
    """How long audit records are kept."""


@lru_cache(maxsize=1)
def get_twin_store_settings() -> TwinStoreSettings:
    return TwinStoreSettings()

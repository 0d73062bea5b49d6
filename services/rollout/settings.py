"""The rollout app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import LimitsSettings


class RolloutSettings(LimitsSettings):
    rollout_tick_seconds: float = 0.5
    """Seconds between planning rounds (stage progress, admissions, per-device timeouts)."""
    rollout_batch: int = 500
    """Most twins per batch write to the twin-store."""
    rollout_concurrency: int = 4
    """Batch writes in flight at once."""
    rollout_page: int = 250
    """Twins per page when scanning the fleet (on activation and at start); 250 full twins stay
    under daprd's 4 MB invocation body limit."""
    twin_store_url: str = ""
    """The twin-store's base URL. Empty (clusters): Dapr service invocation of the `twin-store`
    app. Local stacks set their own twin-store's address: self-hosted daprd resolves app ids by
    mDNS across the whole machine, so two stacks side by side would reach each other's twin-store
    (the SQLite resolver that would keep them apart is not in the stable-components build)."""
    rollout_event_retention: float = 3600.0
    """Seconds of device events kept for health gates (at least the longest soak)."""
    rollout_stale_after: float = 5.0
    """Seconds to wait for `twin.changed` after a version conflict before re-reading the twin."""


@lru_cache(maxsize=1)
def get_rollout_settings() -> RolloutSettings:
    return RolloutSettings()

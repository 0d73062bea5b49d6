"""The delta app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


class DeltaSettings(Settings):
    publish_concurrency: int = 256
    """Most device-broker publishes in flight at once (paces fan-out)."""
    firmware_public_url: str = ""
    """The firmware service's address as devices reach it. Set: every delta carrying a software
    reference gets a freshly minted download URL (late binding). Empty: devices obtain a temporary
    credential instead."""
    download_url_ttl: int = 24 * 3600
    """Seconds a late-bound download URL stays valid after the delta was sent."""


@lru_cache(maxsize=1)
def get_delta_settings() -> DeltaSettings:
    return DeltaSettings()

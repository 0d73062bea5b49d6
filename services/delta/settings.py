"""The delta app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


class DeltaSettings(Settings):
    publish_concurrency: int = 256
    """Most device-broker publishes in flight at once (paces fan-out)."""
    download_urls: bool = True
    """Every delta carrying a software reference gets a download URL the firmware app mints for
    its device as it is sent (late binding). Off: devices obtain a temporary credential instead."""
    firmware_url: str = ""
    """The firmware app's base URL; empty: Dapr service invocation (local stacks set it, as
    daprd's mDNS resolution spans the machine)."""
    download_url_ttl: int = 3600
    """Seconds a late-bound download URL stays valid after the delta was sent."""


@lru_cache(maxsize=1)
def get_delta_settings() -> DeltaSettings:
    return DeltaSettings()

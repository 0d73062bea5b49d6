"""The events app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


class EventsSettings(Settings):
    twin_store_url: str = ""
    """The twin-store's base URL (a device's tags, to check a scoped caller); empty: Dapr service
    invocation (local stacks set it, see the rollout app's)."""
    events_gap_timeout: float = 30.0
    """Seconds a batch waits for an earlier missing batch before it is taken and the gap counted lost."""
    events_sink_name_key: str = "fileName"
    """The binding's request metadata key naming the object written: `fileName` for
    `bindings.localstorage`, `blobName` for Azure Blob storage, `key` for AWS S3."""


@lru_cache(maxsize=1)
def get_events_settings() -> EventsSettings:
    return EventsSettings()

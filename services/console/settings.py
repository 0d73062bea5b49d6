"""The console's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


class ConsoleSettings(Settings):
    console_token_url: str = ""
    """The issuer's token endpoint operators' client credentials are exchanged at (the one
    `twin login --client-id` uses); empty: sign-in takes a token or an API key only."""
    console_apps: dict[str, str] = {}
    """App id → base URL the console forwards to. Empty (clusters): Dapr service invocation through
    its own sidecar. Local stacks set each app's own sidecar (see `twin_store_url` for why)."""
    console_scan_page: int = 1000
    """Twins per page when the fleet index is rebuilt from the store (at start)."""
    console_live_queue: int = 1000
    """Changes buffered per live subscriber; one that falls further behind is told to reload."""
    console_cookie_secure: bool = False
    """Mark the session cookie `Secure` (behind TLS)."""


@lru_cache(maxsize=1)
def get_console_settings() -> ConsoleSettings:
    return ConsoleSettings()

"""The commands app's settings (the shared loader and prefix `TWINFLEET_`)."""

from __future__ import annotations

from functools import lru_cache

from services.platform.settings import Settings


class CommandsSettings(Settings):
    twin_store_url: str = ""
    """The twin-store's base URL (a device's tags, to check a scoped caller); empty: Dapr service
    invocation (local stacks set it, see the rollout app's)."""
    commands_retention: float = 7 * 24 * 3600.0
    """Seconds a finished command stays readable (then the store drops it: a state TTL)."""
    commands_max_pending: int = 100
    """Most unexpired pending commands per device; one more is refused with 429."""
    commands_max_listed: int = 256
    """Most commands a device's index keeps (the oldest finished ones go first)."""
    commands_sweep_interval: float = 1.0
    """Seconds between sweep rounds (expire commands of devices that stay away; re-publish ones whose
    first publish failed)."""
    commands_sweep_batch: int = 200
    """Most devices one sweep round looks at (the earliest due first)."""
    commands_redeliver_after: float = 10.0
    """Seconds after which the sweep publishes again a command whose first publish failed."""


@lru_cache(maxsize=1)
def get_commands_settings() -> CommandsSettings:
    return CommandsSettings()

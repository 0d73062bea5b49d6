"""What tests need of a running suite, whether local processes (`services.devtools.stack.Stack`)
or containers (`twinfleet.testing.TwinfleetSuite`): the same helpers drive both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class RunningSuite(Protocol):
    topic_profile: str

    @property
    def mqtt_host(self) -> str: ...

    @property
    def mqtt_port(self) -> int: ...

    @property
    def api_url(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]:
        """What a caller of the suite's APIs sends (a credential)."""
        ...

    def app_url(self, name: str) -> str: ...

    def provision_devices(self, device_ids: Iterable[str]) -> dict[str, str]: ...

    def device_password(self, device_id: str) -> str: ...

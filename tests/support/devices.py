"""Device links for tests: provisioned with their own broker credentials on a test stack."""

from __future__ import annotations

import uuid

from services.contracts.topics import profile
from services.devtools.fleet.link import DeviceLink
from services.devtools.stack import Stack


def new_device_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def link(stack: Stack, device_id: str, shadow: str = "", *, provision: bool = True, **kwargs: object) -> DeviceLink:
    if provision:
        stack.provision_devices([device_id])
    return DeviceLink(
        device_id,
        stack.device_password(device_id),
        "127.0.0.1",
        stack.mqtts_port if kwargs.get("tls") else stack.mqtt_port,
        profile(stack.topic_profile),
        shadow,
        **kwargs,  # type: ignore[arg-type]
    )

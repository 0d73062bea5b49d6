"""Device requests (`update`, `get`, `delete`) as they arrive on the twin-store's own connection to
the device broker (`platform/device_broker.py`): the hot path. A request returns once its effects
are durable and its reply published; only then is the message acknowledged to the broker."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from services.contracts.topics import TopicProfile
from services.domain.twin.commands import DeviceRequest
from services.platform import tracing
from services.platform.cloudevents import shared
from services.platform.names import SHARED_SUBSCRIPTION_GROUP
from services.twin_store.writer import TwinWriter


def device_subscriptions(profile: TopicProfile) -> list[str]:
    """The request topics as shared subscriptions, so replicas split the load. Filters that begin
    with `$` (the AWS profile) are subscribed plainly: Mosquitto 2.0 delivers nothing to a shared
    subscription on `$`-topics, so that profile runs one twin-store replica per broker."""
    return [shared(SHARED_SUBSCRIPTION_GROUP, f) for f in profile.subscriptions()]


class DeviceRequests:
    """Hands each device message to the writer; a topic that is no request is dropped (acknowledged)."""

    def __init__(self, writer: TwinWriter, profile: TopicProfile) -> None:
        self._writer = writer
        self._profile = profile

    async def __call__(self, topic: str, payload: bytes) -> None:
        parsed = self._profile.parse(topic)
        if parsed is None:
            return
        address, op = parsed
        with tracing.span(f"twin-store {op.value}", SpanKind.CONSUMER, device=address.device_id):
            await self._writer.submit(DeviceRequest(address, op, payload))

"""Device topic profiles: one definition of every device-facing MQTT topic.

`default`: `{id}/state/update`, replies under it (DESIGN §2).
`aws`: the AWS IoT Device Shadow layout, `$aws/things/{thing}/shadow/...`, incl. named shadows.
The device id always comes from the topic, never from the payload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class Operation(StrEnum):
    UPDATE = "update"
    GET = "get"
    DELETE = "delete"
    TEMPLATE = "template"
    """A device registers a wire template (`contracts/templates.py`), then sends values without keys."""


class Reply(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DELTA = "delta"
    DOCUMENTS = "documents"


@dataclass(frozen=True, slots=True)
class TwinAddress:
    """Which twin a message is for: a device and, for named shadows, the shadow's name."""

    device_id: str
    shadow: str = ""

    @property
    def key(self) -> str:
        return f"{self.device_id}~{self.shadow}" if self.shadow else self.device_id


def valid_id(value: str) -> bool:
    """Device ids and shadow names: 1..128 of letters, digits, `_ . : -` (safe in any topic)."""
    return bool(_ID.match(value))


@dataclass(frozen=True, slots=True)
class TopicProfile:
    name: str
    _prefix: str  # "{id}/state" or "$aws/things/{id}/shadow"
    named_shadows: bool

    def request_topic(self, address: TwinAddress, op: Operation) -> str:
        return f"{self._base(address)}/{op.value}"

    def reply_topic(self, address: TwinAddress, op: Operation, reply: Reply) -> str:
        return f"{self._base(address)}/{op.value}/{reply.value}"

    def subscriptions(self) -> list[str]:
        """MQTT filters the twin-store subscribes to (one per operation, plus named shadows)."""
        base = self._prefix.replace("{id}", "+")
        filters = [f"{base}/{op.value}" for op in Operation]
        if self.named_shadows:
            filters += [f"{base}/name/+/{op.value}" for op in Operation]
        return filters

    def parse(self, topic: str) -> tuple[TwinAddress, Operation] | None:
        """The twin and operation a request topic names, or None if it is not a request topic."""
        parts = topic.split("/")
        head = self._prefix.split("/")
        id_index = head.index("{id}")
        if len(parts) < len(head) + 1:
            return None
        for index, fixed in enumerate(head):
            if index != id_index and parts[index] != fixed:
                return None
        device_id = parts[id_index]
        rest = parts[len(head) :]
        shadow = ""
        if self.named_shadows and len(rest) == 3 and rest[0] == "name":
            shadow, rest = rest[1], rest[2:]
            if not valid_id(shadow):
                return None
        if len(rest) != 1 or not valid_id(device_id):
            return None
        try:
            op = Operation(rest[0])
        except ValueError:
            return None
        return TwinAddress(device_id, shadow), op

    def device_topics(self, device_id: str) -> str:
        """A filter covering every topic of one device (for broker ACLs and device subscriptions)."""
        return self._prefix.replace("{id}", device_id) + "/#"

    def _base(self, address: TwinAddress) -> str:
        base = self._prefix.replace("{id}", address.device_id)
        return f"{base}/name/{address.shadow}" if address.shadow else base


DEFAULT = TopicProfile("default", "{id}/state", named_shadows=False)
AWS = TopicProfile("aws", "$aws/things/{id}/shadow", named_shadows=True)
PROFILES = {p.name: p for p in (DEFAULT, AWS)}


@dataclass(frozen=True, slots=True)
class DeviceChannels:
    """A device's topics beside its twin: events up, durable commands down and their results up,
    and a connectivity probe nobody subscribes to (the broker's PUBACK is the answer)."""

    device_id: str

    @property
    def events(self) -> str:
        return f"{self.device_id}/events"

    @property
    def events_ack(self) -> str:
        """The cloud tells the device how far it has taken its events (`{"next_seq": n}`)."""
        return f"{self.device_id}/events/ack"

    def command(self, command_id: str) -> str:
        return f"{self.device_id}/commands/{command_id}"

    def command_result(self, command_id: str) -> str:
        return f"{self.device_id}/commands/{command_id}/result"

    @property
    def commands_filter(self) -> str:
        """What the device subscribes to for commands (`{id}/commands/+`)."""
        return f"{self.device_id}/commands/+"

    @property
    def commands_sync(self) -> str:
        """The device asks for every pending command (after it (re)connects)."""
        return f"{self.device_id}/commands/sync"

    @property
    def probe(self) -> str:
        return f"{self.device_id}/agent/probe"


EVENTS_FILTER = "+/events"
COMMAND_RESULTS_FILTER = "+/commands/+/result"
COMMANDS_SYNC_FILTER = "+/commands/sync"


def channel_device(topic: str) -> str | None:
    """The device id a device-channel topic starts with, or None when it is not a valid one."""
    device_id = topic.split("/", 1)[0]
    return device_id if valid_id(device_id) else None


def profile(name: str) -> TopicProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown topic profile {name!r}; choose one of {sorted(PROFILES)}") from None

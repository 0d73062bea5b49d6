"""A realistic device document, in one place for the bench and anything else that wants one.

A gateway-class device (an industrial edge gateway on LTE) reporting its firmware and software
versions, its configuration (numbers, booleans, strings, lists), a few sensor readings (floats)
and network information; then the messages the device contract makes of it, built with the
domain's own functions so their shapes (per-leaf metadata timestamps included) are the real ones.
"""

from __future__ import annotations

import copy
from typing import Any

from services.domain.twin.document import TwinDocument
from services.domain.twin.limits import Limits
from services.domain.twin.update import apply_update, parse_update, patch_desired

DEVICE_ID = "gw-berlin-0042"
CLIENT_TOKEN = "5f0c9d2e-7a41-4b8e-9c3d-2e6f1a8b4c07"
REPORTED_AT = 1_795_000_000
"""Unix seconds of the report (metadata timestamps)."""
DESIRED_AT = REPORTED_AT + 3_600

GATEWAY_REPORTED: dict[str, Any] = {
    "firmware": {"version": "4.2.1", "build": "2026.11.18-a7c3e9f", "bootloader": "1.9.0", "channel": "stable"},
    "software": {
        "agent": "0.9.3",
        "os": "Debian 13.2",
        "kernel": "6.12.48-arm64",
        "containers": [
            {"name": "modbus-bridge", "image": "registry.example.com/edge/modbus-bridge:2.3.0", "running": True},
            {"name": "historian", "image": "registry.example.com/edge/historian:1.14.2", "running": True},
        ],
    },
    "config": {
        "sampleRate": 5,
        "reportInterval": 60,
        "uploadBatch": 200,
        "compression": True,
        "logLevel": "info",
        "timezone": "Europe/Berlin",
        "ntpServers": ["0.de.pool.ntp.org", "1.de.pool.ntp.org"],
        "modbus": {"baud": 19200, "parity": "even", "stopBits": 1, "slaves": [1, 2, 5, 7]},
        "alarms": {"tempHigh": 75.0, "tempLow": -10.0, "humidityHigh": 85.5, "enabled": True},
        "mqtt": {"keepalive": 30, "qos": 1, "cleanSession": False},
    },
    "sensors": {
        "cpuTemp": 48.3,
        "boardTemp": 39.75,
        "ambientTemp": 21.7,
        "humidity": 44.2,
        "supplyVoltage": 12.06,
        "load": [0.42, 0.37, 0.31],
        "uptime": 1_843_211,
    },
    "network": {
        "interface": "wwan0",
        "type": "lte",
        "operator": "Telekom.de",
        "rssi": -71,
        "rsrp": -98,
        "sinr": 12.5,
        "ipv4": "10.64.12.7",
        "apn": "internet.m2m",
        "bytesTx": 18_234_567,
        "bytesRx": 94_123_456,
        "wifi": False,
    },
    "storage": {"totalMb": 29_820, "freeMb": 17_411.5},
}

GATEWAY_DESIRED: dict[str, Any] = {
    "firmware": {"version": "4.3.0", "channel": "stable"},
    "config": {"sampleRate": 10, "logLevel": "debug", "alarms": {"tempHigh": 80.0}},
}
"""A configuration rollout and a firmware update (the delta holds what differs from reported)."""


def update_request() -> dict[str, Any]:
    """The device's `/update` request reporting its whole state."""
    return {"state": {"reported": copy.deepcopy(GATEWAY_REPORTED)}, "clientToken": CLIENT_TOKEN}


def _reported_twin() -> tuple[TwinDocument, dict[str, Any]]:
    limits = Limits()
    outcome = apply_update(None, DEVICE_ID, "", parse_update(update_request(), limits), REPORTED_AT, limits)
    return outcome.current, outcome.accepted


def accepted_reply() -> dict[str, Any]:
    """`/update/accepted` for `update_request()`: the state as sent plus per-leaf metadata."""
    return _reported_twin()[1]


def delta_message() -> dict[str, Any]:
    """`/update/delta` after a component set `GATEWAY_DESIRED` (state, metadata, version)."""
    reported, _ = _reported_twin()
    outcome = patch_desired(reported, DEVICE_ID, "", GATEWAY_DESIRED, None, DESIRED_AT, Limits())
    message = outcome.current.delta_message()
    assert message is not None
    return message


def documents_message() -> dict[str, Any]:
    """`/update/documents` for that desired change: the whole document before and after."""
    reported, _ = _reported_twin()
    outcome = patch_desired(reported, DEVICE_ID, "", GATEWAY_DESIRED, None, DESIRED_AT, Limits())
    return {"previous": reported.snapshot(), "current": outcome.current.snapshot(), "timestamp": DESIRED_AT}


def messages() -> dict[str, dict[str, Any]]:
    """Every message above by what it is (request and replies of one report, then one rollout)."""
    return {
        "update (reported)": update_request(),
        "/update/accepted": accepted_reply(),
        "/update/delta": delta_message(),
        "/update/documents": documents_message(),
    }

"""Device agents for tests: each with its own broker credentials, sidecar and data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.devtools.agent import LocalAgent
from services.devtools.stack import Stack

AGENT_ENV = {
    "TWINFLEET_AGENT_PROBE_INTERVAL": "0.5",
    "TWINFLEET_AGENT_PUBLISH_TIMEOUT": "1.5",
    "TWINFLEET_AGENT_REQUEST_TIMEOUT": "5",
}

AgentFactory = Callable[..., LocalAgent]


@contextmanager
def agents(stack: Stack, base_env: dict[str, str] | None = None) -> Iterator[AgentFactory]:
    """A factory starting agents (`start(device_id, tls=False, **env)`; `tls`: the broker's TLS
    listener with the device's client certificate); all are stopped at the end."""
    started: list[LocalAgent] = []

    def start(device_id: str, tls: bool = False, **env: str) -> LocalAgent:
        password = stack.provision_devices([device_id])[device_id]
        agent = LocalAgent(
            stack.run_dir / "agents" / device_id,
            device_id,
            password,
            stack.mqtts_port if tls else stack.mqtt_port,
            {**AGENT_ENV, **(base_env or {}), **env},
            stack.device_certificate(device_id) if tls else None,
        )
        started.append(agent)
        agent.start()
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.stop()

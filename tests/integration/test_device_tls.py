"""Device transport security on the local broker: a TLS listener with a locally made CA where a
device authenticates with its client certificate (subject CN = device id, taken as its username),
next to username/password; the ACL keeps a device to its own topics either way. The device link
(fleet simulator) and the agent use either."""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
import httpx
import pytest

from services.devtools.pki import LocalCA
from services.devtools.stack import Stack
from tests.support.agents import agents
from tests.support.devices import link, new_device_id
from tests.support.waiting import eventually


def tls_client(stack: Stack, device_id: str, client_id: str, **kwargs: object) -> aiomqtt.Client:
    """A raw MQTT client with `device_id`'s certificate (its own client id: one session per id)."""
    tls = stack.device_certificate(device_id)
    params = aiomqtt.TLSParameters(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
    return aiomqtt.Client("127.0.0.1", stack.mqtts_port, identifier=client_id, tls_params=params, **kwargs)  # type: ignore[arg-type]


async def twin_version(api: httpx.AsyncClient, device_id: str) -> int | None:
    answer = await api.get(f"/v1/twins/{device_id}")
    return int(answer.json()["version"]) if answer.status_code == 200 else None


async def test_a_device_with_a_certificate_keeps_to_its_own_topics(stack: Stack, api: httpx.AsyncClient) -> None:
    a, b = new_device_id("cert-a"), new_device_id("cert-b")
    async with link(stack, b) as device_b:  # B by password, as before
        await device_b.report({"owner": "b"})
        version_b = await twin_version(api, b)
        async with link(stack, a, tls=stack.device_certificate(a), provision=False) as device_a:
            assert (await device_a.report({"owner": "a"}))["state"]["reported"] == {"owner": "a"}
            # A may neither write B's twin nor read B's replies (the broker drops what the ACL
            # refuses; Mosquitto grants the subscription and delivers nothing on it)
            async with tls_client(stack, a, f"{a}-raw", clean_session=True) as raw:
                await raw.publish(f"{b}/state/update", b'{"state":{"reported":{"owner":"a"}}}', qos=1)
                await raw.subscribe(f"{b}/state/update/accepted", qos=1)
                await device_b.report({"seen": "by b only"})
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(1.5):
                        async for message in raw.messages:
                            raise AssertionError(f"A received B's {message.topic}")
            # a username naming B changes nothing: the certificate's CN is the username
            async with tls_client(stack, a, f"{a}-posing", username=b, clean_session=True) as posing:
                await posing.publish(f"{b}/state/update", b'{"state":{"reported":{"owner":"a"}}}', qos=1)
            await asyncio.sleep(0.5)
            assert await twin_version(api, b) == (version_b or 0) + 1  # B's own report only
            assert (await device_b.get())["state"]["reported"] == {"owner": "b", "seen": "by b only"}


async def test_the_tls_listener_wants_a_certificate_from_its_ca(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    device_id = new_device_id("cert-x")
    no_cert = aiomqtt.TLSParameters(ca_certs=str(stack.ca.ca_cert))
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        async with aiomqtt.Client("127.0.0.1", stack.mqtts_port, identifier=device_id, tls_params=no_cert, timeout=3):
            pass
    stranger = LocalCA(tmp_path_factory.mktemp("other-ca"))
    stranger.create()
    foreign = stranger.device(device_id)
    params = aiomqtt.TLSParameters(ca_certs=str(stack.ca.ca_cert), certfile=str(foreign.cert), keyfile=str(foreign.key))
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        async with aiomqtt.Client("127.0.0.1", stack.mqtts_port, identifier=device_id, tls_params=params, timeout=3):
            pass
    # and the plain listener still wants the device's password
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", stack.mqtt_port, username=device_id, password="wrong", timeout=3):
            pass


async def test_the_agent_connects_with_its_certificate(stack: Stack, api: httpx.AsyncClient) -> None:
    device_id = new_device_id("agent-tls")
    with agents(stack) as start:
        start(device_id, tls=True)

        async def reported() -> object:
            answer = await api.get(f"/v1/twins/{device_id}")
            return answer.status_code == 200 and answer.json()["state"].get("reported", {}).get("agent")

        await eventually(reported, what="the agent's first report over TLS")
        assert (await api.patch(f"/v1/twins/{device_id}/desired", json={"config": {"mode": "tls"}})).status_code == 200

        async def applied() -> object:
            answer = await api.get(f"/v1/twins/{device_id}")
            return answer.json()["state"].get("reported", {}).get("config") == {"mode": "tls"}

        await eventually(applied, what="a desired change applied over TLS")

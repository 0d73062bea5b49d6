"""The AWS IoT shadow topic profile, driven by the AWS IoT Device SDK v2 shadow client unchanged and
with its defaults: over mutual TLS with a client certificate whose CN is the thing name (as AWS IoT
does it), and over username/password, where the SDK appends `?SDK=…&Version=…` to the username
(its metrics; the broker's plugin strips it before the password file and the ACL see it)."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import pytest
from awscrt import io, mqtt
from awsiot import iotshadow, mqtt_connection_builder

from services.devtools.stack import Stack
from tests.support.devices import link, new_device_id

STACK_PROFILE = "aws"
QOS = mqtt.QoS.AT_LEAST_ONCE


class Inbox:
    """Collects SDK callbacks (run on the SDK's threads) in per-topic queues the test waits on."""

    def __init__(self) -> None:
        self.queues: dict[str, queue.Queue[Any]] = {}

    def _queue(self, name: str) -> queue.Queue[Any]:
        return self.queues.setdefault(name, queue.Queue())

    def callback(self, name: str) -> Any:
        q = self._queue(name)
        return q.put

    async def next(self, name: str, timeout: float = 10) -> Any:
        return await asyncio.to_thread(self._queue(name).get, True, timeout)


@pytest.fixture(params=["mtls", "password"])
def sdk_device(request: pytest.FixtureRequest, stack: Stack) -> Any:
    """A thing connected with the SDK's defaults (metrics on), one way or the other."""
    thing = new_device_id("thing")
    password = stack.provision_devices([thing])[thing]
    if request.param == "mtls":
        tls = stack.device_certificate(thing)
        connection = mqtt_connection_builder.mtls_from_path(
            endpoint="127.0.0.1",
            port=stack.mqtts_port,
            cert_filepath=str(tls.cert),
            pri_key_filepath=str(tls.key),
            ca_filepath=str(tls.ca),
            client_id=thing,
            clean_session=True,
            keep_alive_secs=30,
        )
    else:
        client = mqtt.Client(io.ClientBootstrap.get_or_create_static_default(), tls_ctx=None)
        connection = mqtt.Connection(
            client, "127.0.0.1", stack.mqtt_port, thing, clean_session=True, username=thing, password=password,
            keep_alive_secs=30,
        )  # fmt: skip
    connection.connect().result(10)
    yield thing, iotshadow.IotShadowClient(connection)
    connection.disconnect().result(10)


def _subscribe(shadow: Any, inbox: Inbox, thing: str, name: str = "") -> None:
    if name:
        req_u = iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=thing, shadow_name=name)
        req_g = iotshadow.GetNamedShadowSubscriptionRequest(thing_name=thing, shadow_name=name)
        req_d = iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=thing, shadow_name=name)
        subs = [
            shadow.subscribe_to_update_named_shadow_accepted(req_u, QOS, inbox.callback("update.accepted")),
            shadow.subscribe_to_update_named_shadow_rejected(req_u, QOS, inbox.callback("update.rejected")),
            shadow.subscribe_to_get_named_shadow_accepted(req_g, QOS, inbox.callback("get.accepted")),
            shadow.subscribe_to_named_shadow_delta_updated_events(req_d, QOS, inbox.callback("delta")),
        ]
    else:
        req_u = iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing)
        req_g = iotshadow.GetShadowSubscriptionRequest(thing_name=thing)
        req_d = iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing)
        req_x = iotshadow.DeleteShadowSubscriptionRequest(thing_name=thing)
        req_docs = iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=thing)
        subs = [
            shadow.subscribe_to_update_shadow_accepted(req_u, QOS, inbox.callback("update.accepted")),
            shadow.subscribe_to_update_shadow_rejected(req_u, QOS, inbox.callback("update.rejected")),
            shadow.subscribe_to_get_shadow_accepted(req_g, QOS, inbox.callback("get.accepted")),
            shadow.subscribe_to_get_shadow_rejected(req_g, QOS, inbox.callback("get.rejected")),
            shadow.subscribe_to_delete_shadow_accepted(req_x, QOS, inbox.callback("delete.accepted")),
            shadow.subscribe_to_shadow_delta_updated_events(req_d, QOS, inbox.callback("delta")),
            shadow.subscribe_to_shadow_updated_events(req_docs, QOS, inbox.callback("documents")),
        ]
    for future, _topic in subs:
        future.result(10)


async def test_sdk_shadow_client_round_trip(stack: Stack, sdk_device: Any) -> None:
    thing, shadow = sdk_device
    inbox = Inbox()
    _subscribe(shadow, inbox, thing)

    shadow.publish_update_shadow(
        iotshadow.UpdateShadowRequest(
            thing_name=thing, state=iotshadow.ShadowState(reported={"color": "red", "fw": "1.0"}), client_token="c1"
        ),
        QOS,
    ).result(10)
    response = await inbox.next("update.accepted")
    assert response.version == 1 and response.client_token == "c1"
    assert response.state.reported == {"color": "red", "fw": "1.0"}
    assert response.metadata.reported["color"]["timestamp"]

    docs = await inbox.next("documents")
    assert docs.current.state.reported == {"color": "red", "fw": "1.0"} and docs.current.version == 1

    # A component sets desired state through the same topics: the SDK's delta event arrives.
    shadow.publish_update_shadow(
        iotshadow.UpdateShadowRequest(thing_name=thing, state=iotshadow.ShadowState(desired={"color": "green"})), QOS
    ).result(10)
    event = await inbox.next("delta")
    assert event.state == {"color": "green"} and event.version == 2

    shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=thing, client_token="g1"), QOS).result(10)
    document = await inbox.next("get.accepted")
    assert document.state.delta == {"color": "green"} and document.client_token == "g1"
    assert document.state.reported == {"color": "red", "fw": "1.0"}

    shadow.publish_update_shadow(
        iotshadow.UpdateShadowRequest(thing_name=thing, state=iotshadow.ShadowState(reported={"x": 1}), version=99),
        QOS,
    ).result(10)
    error = await inbox.next("update.rejected")
    assert error.code == 409 and "version" in error.message

    shadow.publish_delete_shadow(iotshadow.DeleteShadowRequest(thing_name=thing), QOS).result(10)
    assert (await inbox.next("delete.accepted")).version == 3
    shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=thing), QOS).result(10)
    assert (await inbox.next("get.rejected")).code == 404


async def test_sdk_named_shadow(stack: Stack, sdk_device: Any) -> None:
    thing, shadow = sdk_device
    inbox = Inbox()
    _subscribe(shadow, inbox, thing, "config")
    shadow.publish_update_named_shadow(
        iotshadow.UpdateNamedShadowRequest(
            thing_name=thing, shadow_name="config", state=iotshadow.ShadowState(desired={"mode": "eco"}, reported={})
        ),
        QOS,
    ).result(10)
    assert (await inbox.next("update.accepted")).version == 1
    delta = await inbox.next("delta")
    assert delta.state == {"mode": "eco"}
    shadow.publish_get_named_shadow(
        iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name="config"), QOS
    ).result(10)
    assert (await inbox.next("get.accepted")).state.desired == {"mode": "eco"}


async def test_named_and_classic_shadows_are_separate_twins(stack: Stack) -> None:
    thing = new_device_id("thing")
    async with link(stack, thing) as classic, link(stack, thing, "ota", provision=False, client_id=f"{thing}-2") as ota:
        await classic.report({"a": 1})
        await ota.report({"b": 2})
        assert (await classic.get())["state"]["reported"] == {"a": 1}
        assert (await ota.get())["state"]["reported"] == {"b": 2}

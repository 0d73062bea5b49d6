"""`twin devices create`: provision a device (broker credentials and an empty twin)."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import typer

from services.cli.suite import console, stack_state, twins
from services.clients.base import ApiError
from services.clients.twin_store import TwinStoreClient
from services.contracts.topics import Operation, TwinAddress, profile
from services.devtools.broker import BrokerAccounts

devices = typer.Typer(help="Provision devices.", no_args_is_help=True)


@devices.command("create")
def create_device(device_id: str) -> None:
    """Give a device broker credentials and register its (empty) twin; prints how it connects."""
    stack = stack_state()
    password = secrets.token_urlsafe(18)
    BrokerAccounts(Path(stack["run_dir"]) / "mosquitto").set_many([(device_id, password)])
    mosquitto_pid = stack["pids"].get("mosquitto")
    if mosquitto_pid:
        os.kill(int(mosquitto_pid), signal.SIGHUP)  # reload credentials
    twins(lambda api: _register(api, device_id))
    topics = profile(stack.get("topic_profile", "default"))
    address = TwinAddress(device_id)
    console.print_json(
        json.dumps(
            {
                "host": stack["mqtt"]["host"],
                "port": stack["mqtt"]["port"],
                "clientId": device_id,
                "username": device_id,
                "password": password,
                "publish": topics.request_topic(address, Operation.UPDATE),
                "subscribe": topics.device_topics(device_id),
            }
        )
    )


async def _register(api: TwinStoreClient, device_id: str) -> None:
    try:
        await api.create(device_id)
    except ApiError as error:
        if error.status != 409:  # a twin that exists already is fine
            raise

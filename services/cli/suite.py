"""Where the `twin` command finds the running suite (its run directory, or `TWINFLEET_*_API`), the
typed clients it calls it with, and how a refusal is shown (its code and message, exit 1)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from services.cli.login import credential
from services.clients.access import AccessClient
from services.clients.base import ApiClient, ApiError, Unreachable
from services.clients.commands import CommandsClient
from services.clients.console import ConsoleClient, EventsClient
from services.clients.credentials import CredentialError
from services.clients.rollout import RolloutClient
from services.clients.twin_store import TwinStoreClient
from services.platform.names import COMMANDS_APP, CONSOLE_APP, EVENTS_APP, ROLLOUT_APP, TWIN_STORE_APP

console = Console()
C = TypeVar("C", bound=ApiClient)


class Output:
    """`twin --output json …`: every command prints the API's answer as JSON (for scripts) instead
    of its tables; `following` commands (`--watch`) print one JSON line per update instead."""

    json = False
    following = False


def as_json(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json(by_alias=True)
    if isinstance(value, list | tuple):
        return "[" + ",".join(as_json(v) for v in value) + "]"
    if isinstance(value, bytes):
        return value.decode()
    return json.dumps(value)


R = TypeVar("R")


def run_dir() -> Path:
    return Path(os.environ.get("TWINFLEET_RUN_DIR", ".run"))


def stack_state() -> dict[str, Any]:
    path = run_dir() / "stack.json"
    if not path.exists():
        raise typer.BadParameter(f"no running suite found ({path} missing): start one with `make up`")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def app_api(app: str) -> str:
    """An app's base URL: TWINFLEET_<APP>_API (TWINFLEET_API for the twin-store), else the running
    suite's."""
    explicit = os.environ.get("TWINFLEET_API" if app == TWIN_STORE_APP else f"TWINFLEET_{app.upper()}_API")
    if explicit:
        return explicit
    state = stack_state()
    url = state["api"] if app == TWIN_STORE_APP else state.get("apps", {}).get(app)
    if not url:
        raise typer.BadParameter(f"the running suite has no {app} app (or predates it): restart it")
    return str(url)


def _token_file() -> str | None:
    path = run_dir() / "stack.json"
    return str(json.loads(path.read_text()).get("token_file", "")) if path.exists() else None


REFUSED = {
    401: "not authenticated",
    403: "refused",
}
"""How a refusal is introduced: 401 (no, or a bad, credential: `twin login`), 403 (the credential
lacks the role or the scope the call needs)."""


def calling(client: type[C], app: str, use: Callable[[C], Awaitable[R]]) -> R:
    """Run `use` with a client of `app`, sending the login's credential; a refusal or an
    unreachable app is printed, exit 1."""

    async def go() -> R:
        async with client(app_api(app), auth=credential(_token_file())) as api:
            return await use(api)

    try:
        result = asyncio.run(go())
    except ApiError as error:
        why = REFUSED.get(error.status)
        if why is None:
            console.print(f"[red]{error.status}[/] {error.message}")
        else:
            console.print(f"[red]{error.status} {why}:[/] {error.message}")
            if error.status == 401:
                console.print("log in with `twin login` (client credentials, or a token or API key)")
        raise typer.Exit(1) from None
    except Unreachable as error:
        console.print(f"[red]unreachable[/] {error}")
        raise typer.Exit(1) from None
    except CredentialError as error:
        console.print(f"[red]login failed:[/] {error}")
        raise typer.Exit(1) from None
    if Output.json and not Output.following:
        print(as_json(result))
        raise typer.Exit(0)
    return result


def twins(use: Callable[[TwinStoreClient], Awaitable[R]]) -> R:
    return calling(TwinStoreClient, TWIN_STORE_APP, use)


def rollouts(use: Callable[[RolloutClient], Awaitable[R]]) -> R:
    return calling(RolloutClient, ROLLOUT_APP, use)


def commands(use: Callable[[CommandsClient], Awaitable[R]]) -> R:
    return calling(CommandsClient, COMMANDS_APP, use)


def access(use: Callable[[AccessClient], Awaitable[R]]) -> R:
    return calling(AccessClient, TWIN_STORE_APP, use)


def fleet(use: Callable[[ConsoleClient], Awaitable[R]]) -> R:
    return calling(ConsoleClient, CONSOLE_APP, use)


def events(use: Callable[[EventsClient], Awaitable[R]]) -> R:
    return calling(EventsClient, EVENTS_APP, use)


def print_json(model: BaseModel) -> None:
    console.print_json(model.model_dump_json(by_alias=True))

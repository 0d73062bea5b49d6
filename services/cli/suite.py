"""Where the `twin` command finds the running suite (its run directory, or `TWINFLEET_*_API`) and how
it calls an app's REST API (a refusal is printed with its code and message).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from services.platform.names import COMMANDS_APP, ROLLOUT_APP

console = Console()


def run_dir() -> Path:
    return Path(os.environ.get("TWINFLEET_RUN_DIR", ".run"))


def stack_state() -> dict[str, Any]:
    path = run_dir() / "stack.json"
    if not path.exists():
        raise typer.BadParameter(f"no running suite found ({path} missing): start one with `make up`")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def twin_store_api() -> str:
    return os.environ.get("TWINFLEET_API") or str(stack_state()["api"])


def app_api(app: str) -> str:
    """An app's base URL: TWINFLEET_<APP>_API, else the running suite's."""
    explicit = os.environ.get(f"TWINFLEET_{app.upper()}_API")
    if explicit:
        return explicit
    url = stack_state().get("apps", {}).get(app)
    if not url:
        raise typer.BadParameter(f"the running suite has no {app} app (or predates it): restart it")
    return str(url)


def commands_api() -> str:
    return app_api(COMMANDS_APP)


def rollout_api() -> str:
    return app_api(ROLLOUT_APP)


def call(method: str, path: str, base: str | None = None, **kwargs: Any) -> Any:
    response = httpx.request(method, (base or twin_store_api()) + path, timeout=30, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}[/] {message}")
        raise typer.Exit(1)
    return response.json() if response.content else None

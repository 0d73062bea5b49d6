"""Every REST operation of every cloud app has a `twin` verb (or a stated reason for none), and
every verb the table names exists: walks each app's OpenAPI document and the CLI's command tree."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import typer

from services.cli.main import app as cli
from services.cli.operations import NO_VERB, OPERATIONS

APPS = ["twin_store", "commands", "events", "rollout", "firmware", "console"]


def operations() -> set[str]:
    found = set()
    for name in APPS:
        spec = importlib.import_module(f"services.{name}.main").app.openapi()
        for path, methods in spec["paths"].items():
            found |= {f"{method.upper()} {path}" for method in methods}
    return found


def verbs() -> set[str]:
    def walk(command: Any, prefix: str) -> set[str]:
        children = getattr(command, "commands", None)
        if children:
            return {v for name, sub in children.items() for v in walk(sub, f"{prefix} {name}".strip())}
        return {prefix}

    return walk(typer.main.get_command(cli), "")


def test_every_operation_has_a_verb_or_a_reason() -> None:
    missing = sorted(operations() - OPERATIONS.keys() - NO_VERB.keys())
    assert not missing, f"REST operations with no `twin` verb: {missing}"
    assert not OPERATIONS.keys() & NO_VERB.keys()
    stale = sorted((OPERATIONS.keys() | NO_VERB.keys()) - operations())
    assert not stale, f"table rows for operations no app serves: {stale}"


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_the_verb_exists(operation: str) -> None:
    assert OPERATIONS[operation] in verbs(), f"{operation}: `twin {OPERATIONS[operation]}` is not a command"

"""`twin get|desire|tag|list|delete`: read and change twins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from services.cli.suite import console, print_json, twins
from services.contracts.twins import BatchItem


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`a.b=1 c=on d=null` -> {"a": {"b": 1}, "c": "on", "d": None}; values are JSON when they parse."""
    patch: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{assignment!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = patch
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return patch


def get(device_id: str, shadow: str = typer.Option("", help="named shadow")) -> None:
    """Print a twin (desired, reported, delta, metadata, version, tags)."""
    twin = twins(lambda api: api.get(device_id, shadow))
    if twin is None:
        console.print(f"[red]404[/] no twin exists for {device_id}")
        raise typer.Exit(1)
    print_json(twin)


def desire(
    device_id: str,
    assignments: list[str],
    if_version: int | None = typer.Option(None, "--if-version", help="only if the twin is at this version"),
) -> None:
    """Patch desired state: `twin desire dev1 config.fan=on sampleRate=5 old=null`."""
    twin = twins(lambda api: api.patch_desired(device_id, parse_assignments(assignments), if_version))
    console.print(f"version {twin.version}; delta: {json.dumps(twin.delta)}")


def tag(device_id: str, assignments: list[str]) -> None:
    """Set tags: `twin tag dev1 site=berlin ring=canary`."""
    twin = twins(lambda api: api.patch_tags(device_id, parse_assignments(assignments)))
    console.print(f"version {twin.version}; tags: {json.dumps(twin.tags)}")


def list_twins(limit: int = typer.Option(50, help="page size"), cursor: str | None = None) -> None:
    """List twins, a page at a time."""
    page = twins(lambda api: api.page(limit, cursor))
    table = Table("device", "shadow", "version", "tags")
    for item in page.items:
        table.add_row(item.device_id, item.shadow, str(item.version), json.dumps(item.tags))
    console.print(table)
    if page.next:
        console.print(f"more: twin list --cursor '{page.next}'")


def delete(device_id: str) -> None:
    """Delete a twin (its version is kept for when it comes back)."""
    deleted = twins(lambda api: api.delete(device_id))
    console.print(f"deleted at version {deleted.version}")


def batch(
    file: Path = typer.Argument(..., help='JSON: {"items": [{"deviceId", "create"?, "desired"?, "tags"?}]}'),
) -> None:
    """Write up to 1,000 twins in one call (each item answered on its own)."""
    body = json.loads(file.read_text())
    items = [BatchItem.model_validate(item) for item in body.get("items", [])]
    results = twins(lambda api: api.write(items))
    table = Table("device", "status", "version", "unchanged / why")
    for r in results:
        table.add_row(r.device_id, str(r.status), str(r.version or ""), "yes" if r.unchanged else r.message or "")
    console.print(table)

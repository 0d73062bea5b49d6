"""`twin fleet counts|devices`, `twin events cursor`: the console's fleet index (counts by
connection, encoding, software version and tag; the device list searched and sorted) and how far
the cloud has taken a device's events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from services.cli.suite import console, events, fleet
from services.contracts.console import FacetCount

fleet_group = typer.Typer(help="The fleet at a glance (the console's index).", no_args_is_help=True)
events_group = typer.Typer(help="Device events.", no_args_is_help=True)


def _facet(title: str, items: list[FacetCount], total: int) -> Table:
    table = Table(title, "devices", "share")
    for item in items:
        table.add_row(item.value, f"{item.count:,}", f"{100 * item.count / max(total, 1):.1f}%")
    return table


@fleet_group.command("counts")
def counts() -> None:
    """Devices by connection state, wire encoding, software version and tag (the 50 largest)."""
    view = fleet(lambda api: api.fleet())
    console.print(f"{view.twins:,} devices" + ("" if view.ready else " (index rebuilding: partial)"))
    for title, items in (
        ("connection", view.connection),
        ("encoding", view.encoding),
        ("software", view.software),
        ("tag", view.tags),
    ):
        console.print(_facet(title, items, view.twins))


@fleet_group.command("devices")
def devices(
    prefix: str = typer.Option("", help="device ids starting with this"),
    tag: str = typer.Option("", help="only devices with this tag (key=value)"),
    sort: str = typer.Option("id", help="id, version or changed"),
    descending: bool = typer.Option(False, "--descending"),
    offset: int = typer.Option(0),
    limit: int = typer.Option(50),
) -> None:
    """One page of the device list, searched by id prefix and tag, sorted."""
    page = fleet(lambda api: api.devices(prefix, tag, sort, descending, offset, limit))
    table = Table("device", "version", "connection", "encoding", "software", "tags")
    for d in page.items:
        tags = " ".join(f"{k}={v}" for k, v in d.tags.items())
        table.add_row(d.device_id, str(d.version), d.connection, d.encoding, d.software, tags)
    console.print(table)
    console.print(f"{offset + 1 if page.items else 0}–{offset + len(page.items)} of {page.total:,}")


@events_group.command("cursor")
def cursor(device_id: str) -> None:
    """How far the cloud has taken a device's events (the next sequence number, events lost)."""
    view = events(lambda api: api.cursor(device_id))
    console.print(f"{device_id}: next seq {view.next_seq}, lost {view.lost}")


@events_group.command("recent")
def recent(device_id: str) -> None:
    """A device's last events (newest first, at most 20; the console keeps them)."""
    table = Table("seq", "time", "type", "data")
    for e in fleet(lambda api: api.recent_events(device_id)).items:
        table.add_row(
            str(e.seq), datetime.fromtimestamp(e.ts, UTC).isoformat(timespec="seconds"), e.type, json.dumps(e.data)
        )
    console.print(table)

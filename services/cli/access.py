"""`twin keys create|list|revoke` (API keys for pipelines, admin) and `twin audit` (who did what)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from services.cli.suite import access, console, print_json
from services.contracts.access import ApiKeyRequest

keys = typer.Typer(help="API keys for pipelines (admin).", no_args_is_help=True)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


@keys.command("create")
def create_key(
    name: str,
    role: list[str] = typer.Option(
        ..., "--role", help="viewer, operator, release-manager, admin; scoped: operator:region=eu"
    ),
    days: int = typer.Option(90, "--days", help="days until it expires"),
) -> None:
    """Create a key; it is printed this once."""
    request = ApiKeyRequest.model_construct(name=name, roles=role, expires_in_days=days)
    created = access(lambda api: api.create_key(request))
    console.print(f"key {created.id} ({', '.join(created.roles)}), expires {_when(created.expires_at)} UTC")
    console.print("store it now, it is not shown again:")
    print(created.key)


@keys.command("list")
def list_keys() -> None:
    table = Table("id", "name", "roles", "state", "expires", "created by")
    for key in access(lambda api: api.keys()).items:
        table.add_row(key.id, key.name, ", ".join(key.roles), key.state, _when(key.expires_at), key.created_by)
    console.print(table)


@keys.command("get")
def get_key(key_id: str) -> None:
    """One key's record (never its secret)."""
    print_json(access(lambda api: api.key(key_id)))


@keys.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key: the next call made with it is refused."""
    access(lambda api: api.revoke_key(key_id))
    console.print(f"revoked {key_id}")


def audit(
    limit: int = typer.Option(50, help="most records shown"),
    actor: str | None = typer.Option(None, help="only this principal's calls"),
    outcome: str | None = typer.Option(None, help="allowed, refused or failed"),
    before: str | None = typer.Option(None, help="the cursor an earlier page printed"),
) -> None:
    """Who changed what, when, from where, and the outcome (newest first, admin)."""
    page = access(lambda api: api.audit(limit, before, actor, outcome))
    table = Table("when (UTC)", "actor", "app", "call", "target", "outcome", "status")
    for record in page.items:
        table.add_row(
            _when(record.at), f"{record.actor} ({record.actor_kind})", record.app,
            f"{record.method} {record.path}", record.target, record.outcome, str(record.status),
        )  # fmt: skip
    console.print(table)
    if page.next:
        console.print(f"more: twin audit --before '{page.next}'")

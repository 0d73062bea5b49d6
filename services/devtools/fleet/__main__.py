"""`python -m services.devtools.fleet`: run a simulated fleet against a running stack."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from services.contracts.topics import profile
from services.devtools.fleet.fleet import fleet_ids, run_fleet
from services.devtools.pki import LocalCA
from services.domain.software.grants import device_password

app = typer.Typer(add_completion=False)


@app.command()
def main(
    devices: int = typer.Option(1000, help="how many devices"),
    report_interval: float = typer.Option(30.0, help="seconds between telemetry reports per device"),
    run_dir: Path = typer.Option(Path(".run"), help="the stack's run directory"),
    tls: bool = typer.Option(False, help="connect over TLS with a client certificate per device"),
) -> None:
    state = json.loads((run_dir / "stack.json").read_text())
    secret = json.loads((run_dir / "secrets.json").read_text())["fleet"]
    ids = fleet_ids(devices)
    passwords = {d: device_password(secret, d) for d in ids}
    ca = LocalCA(run_dir / "mosquitto" / "tls")
    asyncio.run(
        run_fleet(
            ids,
            passwords,
            state["mqtt"]["host"],
            state["mqtt"]["tls_port" if tls else "port"],
            profile(state["topic_profile"]),
            report_interval,
            certificates=ca.device if tls else None,
        )
    )


if __name__ == "__main__":
    app()

"""`twin`: the command line for twins and devices (talks to the REST API of a running suite).

One module per command group: `twins` (get, desire, tag, list, delete, batch), `devices`,
`commands`, `config`, `firmware`, `access` (keys, audit), `fleet` (counts, devices; events),
`login`; `suite` finds the running suite and calls it; `operations` maps every REST operation to
its verb.
"""

from __future__ import annotations

from enum import StrEnum

import typer

from services.cli import access, login, twins
from services.cli.commands import commands
from services.cli.config import configs
from services.cli.devices import devices
from services.cli.firmware import firmware
from services.cli.fleet import events_group, fleet_group
from services.cli.suite import Output

app = typer.Typer(help="Work with Twinfleet twins and devices.", no_args_is_help=True)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


@app.callback()
def main(
    output: Format = typer.Option(Format.TABLE, "--output", "-o", help="table (for people) or json (for scripts)"),
) -> None:
    """Work with Twinfleet twins and devices (`--install-completion` adds shell completion)."""
    Output.json = output is Format.JSON


app.add_typer(devices, name="devices")
app.add_typer(commands, name="commands")
app.add_typer(configs, name="config")
app.add_typer(access.keys, name="keys")
app.command()(access.audit)
app.command()(login.login)
app.command()(login.logout)
app.add_typer(firmware, name="firmware")
app.add_typer(fleet_group, name="fleet")
app.add_typer(events_group, name="events")
app.command()(twins.batch)
app.command()(twins.get)
app.command()(twins.desire)
app.command()(twins.tag)
app.command("list")(twins.list_twins)
app.command()(twins.delete)


if __name__ == "__main__":
    app()

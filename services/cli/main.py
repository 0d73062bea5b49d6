"""`twin`: the command line for twins and devices (talks to the REST API of a running suite).

One module per command group: `twins` (get, desire, tag, list, delete), `devices`, `commands`,
`config`, `firmware`, `access` (keys, audit), `login`; `suite` finds the running suite and calls it.
"""

from __future__ import annotations

import typer

from services.cli import access, login, twins
from services.cli.commands import commands
from services.cli.config import configs
from services.cli.devices import devices
from services.cli.firmware import firmware

app = typer.Typer(add_completion=False, help="Work with Twinfleet twins and devices.", no_args_is_help=True)
app.add_typer(devices, name="devices")
app.add_typer(commands, name="commands")
app.add_typer(configs, name="config")
app.add_typer(access.keys, name="keys")
app.command()(access.audit)
app.command()(login.login)
app.command()(login.logout)
app.add_typer(firmware, name="firmware")
app.command()(twins.get)
app.command()(twins.desire)
app.command()(twins.tag)
app.command("list")(twins.list_twins)
app.command()(twins.delete)


if __name__ == "__main__":
    app()

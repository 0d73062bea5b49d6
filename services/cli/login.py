"""`twin login|logout`: the credential every other command sends. Client credentials (kept and
renewed: `--client-id`, `--client-secret`, `--token-url`), or a token or API key given in a file,
on standard input or in `TWINFLEET_TOKEN`. Kept in `TWINFLEET_LOGIN_FILE` (default
`~/.config/twinfleet/login.json`, readable by its owner only). Without a login, the commands use
`TWINFLEET_TOKEN`, else the running local suite's admin token."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from services.clients.credentials import BearerAuth, ClientCredentials, CredentialError, fetch_token


def login_file() -> Path:
    return Path(os.environ.get("TWINFLEET_LOGIN_FILE", Path.home() / ".config" / "twinfleet" / "login.json"))


def saved_login() -> dict[str, Any] | None:
    path = login_file()
    return dict(json.loads(path.read_text())) if path.exists() else None


def credential(fallback_token_file: str | None) -> BearerAuth:
    """What the commands send: `TWINFLEET_TOKEN`, else the saved login, else the suite's token file."""
    explicit = os.environ.get("TWINFLEET_TOKEN", "").strip()
    if explicit:
        return BearerAuth(explicit)
    saved = saved_login()
    if saved is not None and saved.get("client_id"):
        return BearerAuth(client=ClientCredentials(**saved["client"]))
    if saved is not None and saved.get("token"):
        return BearerAuth(str(saved["token"]))
    if fallback_token_file and Path(fallback_token_file).exists():
        return BearerAuth(Path(fallback_token_file).read_text().strip())
    return BearerAuth()


def _save(content: dict[str, Any]) -> Path:
    path = login_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(content))
    return path


def login(
    client_id: str | None = typer.Option(None, "--client-id", help="OAuth2 client credentials: the client id"),
    client_secret: str | None = typer.Option(None, "--client-secret", envvar="TWINFLEET_CLIENT_SECRET"),
    token_url: str | None = typer.Option(None, "--token-url", help="the issuer's token endpoint"),
    audience: str = typer.Option("twinfleet", "--audience"),
    token_file: Path | None = typer.Option(None, "--token-file", help="a token or API key in a file ('-': stdin)"),
) -> None:
    """Log in with client credentials (checked now, renewed as needed), or keep a token or API key
    from a file, standard input or `TWINFLEET_TOKEN`."""
    if client_id:
        if not client_secret or not token_url:
            raise typer.BadParameter(
                "client credentials need --client-secret (or TWINFLEET_CLIENT_SECRET) and --token-url"
            )
        client = ClientCredentials(token_url, client_id, client_secret, audience)
        try:
            asyncio.run(fetch_token(client))
        except CredentialError as error:
            typer.echo(f"login refused: {error}")
            raise typer.Exit(1) from None
        path = _save({"client_id": client_id, "client": _fields(client)})
        typer.echo(f"logged in as client {client_id} (kept in {path})")
        return
    if token_file is not None:
        text = sys.stdin.read() if str(token_file) == "-" else token_file.read_text()
    else:
        text = os.environ.get("TWINFLEET_TOKEN", "")
    if not text.strip():
        raise typer.BadParameter("give --client-id …, --token-file FILE, or set TWINFLEET_TOKEN")
    path = _save({"token": text.strip()})
    typer.echo(f"logged in with a {'key' if text.strip().startswith('tfk_') else 'token'} (kept in {path})")


def _fields(client: ClientCredentials) -> dict[str, str]:
    return {f: getattr(client, f) for f in ("token_url", "client_id", "client_secret", "audience", "scope")}


def logout() -> None:
    """Forget the saved login."""
    login_file().unlink(missing_ok=True)
    typer.echo("logged out")

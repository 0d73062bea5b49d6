"""`twin firmware`: the release chain from the release manager's and root key holders' side.

    twin firmware keys [--new FILE]                      the roles and keys of the current root; or a new key
    twin firmware sign FILE --name N --version V --key K  next targets metadata listing FILE (offline)
    twin firmware upload FILE [--targets SIGNED]          the bytes (progress bar), then the release
    twin firmware list | get ID
    twin firmware delete ID [--key K]                     unlist it (signed), then remove its bytes
    twin firmware rotate --key OLD... [--add ROLE=PEM] [--remove ROLE=KEYID] [--threshold ROLE=N]

Signing happens here, on the machine that holds the keys: the suite only ever sees signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Metadata, Root, Targets

from services.cli.suite import calling, console, print_json
from services.clients.firmware import FirmwareClient
from services.contracts.firmware import UrlRequest
from services.domain.errors import TwinError
from services.domain.software import repository as rules
from services.domain.software.artifacts import check_artifact_id, parse_version
from services.platform.names import FIRMWARE_APP

firmware = typer.Typer(help="Sign, upload and manage releases (TUF roles: root, targets; the suite adds the rest).")
PIECE = 1 << 20
Keys = Annotated[list[Path], typer.Option("--key", help="a private key (PEM) to sign with; repeat for a threshold")]


def _client(use: Any) -> Any:
    return calling(FirmwareClient, FIRMWARE_APP, use)


def _signers(paths: list[Path]) -> list[CryptoSigner]:
    try:
        return [rules.pem_signer(path.read_bytes()) for path in paths]
    except (OSError, TwinError) as error:
        raise typer.BadParameter(str(error)) from None


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    length = 0
    with path.open("rb") as file:
        while block := file.read(PIECE):
            digest.update(block)
            length += len(block)
    return length, digest.hexdigest()


async def _roots(api: FirmwareClient, pinned: Path | None) -> list[Root]:
    """The suite's roots, oldest first. With `pinned` (a root you trust, e.g. the first one), the
    chain from it to the newest, each signed by the threshold of the one before and its own:
    what a device checks, so a suite serving a forged root cannot make you sign on top of it."""
    if pinned is None:
        newest = await api.metadata("root.json")
        if newest is None:
            raise typer.BadParameter("the suite has no root yet")
        latest = rules.load(newest, Root.type).signed
        served = [await api.metadata(f"{n}.root.json") for n in range(1, latest.version + 1)]
        return [rules.load(data, Root.type).signed for data in served if data is not None]
    trusted: Root = rules.load(await asyncio.to_thread(pinned.read_bytes), Root.type).signed
    chain = [trusted]
    while (data := await api.metadata(f"{chain[-1].version + 1}.root.json")) is not None:
        new: Metadata[Root] = rules.load(data, Root.type)
        old, own = rules.verification(chain[-1], Root.type, new), rules.verification(new.signed, Root.type, new)
        if new.signed.version != chain[-1].version + 1 or not old.ok or not own.ok:
            raise typer.BadParameter(f"the suite's root v{new.signed.version} does not follow v{chain[-1].version}")
        chain.append(new.signed)
    return chain


async def _current_targets(api: FirmwareClient, pinned: Path | None = None) -> Targets | None:
    """The suite's current targets, checked against its roots (refused if they do not verify:
    signing on top of tampered targets would sign the tampering). Targets signed under an older
    root verify with that root (a rotation that raised the threshold waits for this re-signing)."""
    data = await api.metadata("targets.json")
    if data is None:
        return None
    targets: Metadata[Targets] = rules.load(data, Targets.type)
    roots = await _roots(api, pinned)
    for root in reversed(roots):
        if rules.verification(root, Targets.type, targets).ok:
            if root is not roots[-1]:
                newest = roots[-1].version
                console.print(f"current targets were signed under root v{root.version}; re-signing under v{newest}")
            return targets.signed
    raise typer.BadParameter(
        f"the suite's current targets metadata does not verify: {rules.verification(roots[-1], Targets.type, targets)}"
    )


Pinned = Annotated[
    Path | None, typer.Option("--root", help="a root you trust (e.g. 1.root.json): verify the suite's chain from it")
]


@firmware.command()
def sign(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option(help="the release's name (e.g. gateway)")],
    version: Annotated[str, typer.Option(help="its version (PEP 440 / semver-like)")],
    key: Keys,
    artifact_id: Annotated[str | None, typer.Option("--id", help="artifact id (default {name}-{version})")] = None,
    custom: Annotated[str, typer.Option(help='JSON object for installers, e.g. \'{"image": "…"}\'')] = "{}",
    expires_days: Annotated[int, typer.Option(help="days the targets metadata stays valid")] = 365,
    targets: Annotated[Path | None, typer.Option(help="current targets metadata (default: the suite's)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write (default FILE.targets.json)")] = None,
    root: Pinned = None,
) -> None:
    """Sign the next targets metadata: the current targets plus FILE (hash and length computed
    here). Run it where the release manager's key is; nothing is sent."""
    try:
        parse_version(version)
        path = check_artifact_id(artifact_id or f"{name}-{version}".lower())
        extra = json.loads(custom)
    except (TwinError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None
    if not isinstance(extra, dict):
        raise typer.BadParameter("--custom must be a JSON object")
    signers = _signers(key)
    if targets is not None:
        current: Targets | None = rules.load(targets.read_bytes(), Targets.type).signed
    else:
        current = _client(lambda api: _current_targets(api, root))
    length, sha256 = _digest(file)
    expires = datetime.now(UTC) + timedelta(days=expires_days)
    signed = rules.signed_by(
        rules.targets_with(current, path, length, sha256, {**extra, "name": name, "version": version}, expires), signers
    )
    target = out or file.with_name(file.name + ".targets.json")
    target.write_bytes(signed.to_bytes())
    listed = ", ".join(sorted(signed.signed.targets))
    console.print(f"targets v{signed.signed.version} ({listed}) signed by {len(signers)} key(s) → {target}")


async def _stream(path: Path, progress: Progress, task: Any) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while block := await asyncio.to_thread(file.read, PIECE):
            progress.advance(task, len(block))
            yield block


def _target_for(signed: Targets, file: Path, stored: set[str]) -> str:
    size = file.stat().st_size
    candidates = [p for p, t in signed.targets.items() if t.length == size and p not in stored]
    if len(candidates) != 1:
        raise typer.BadParameter(f"cannot tell which target {file} is ({candidates or 'none'} match): give --id")
    return candidates[0]


@firmware.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    targets: Annotated[Path | None, typer.Option(help="signed targets metadata listing FILE (from `sign`)")] = None,
    artifact_id: Annotated[str | None, typer.Option("--id", help="which target FILE is")] = None,
    name: Annotated[str | None, typer.Option(help="without --targets: the release's name")] = None,
    version: Annotated[str | None, typer.Option(help="without --targets: its version")] = None,
) -> None:
    """Upload FILE's bytes (with a progress bar), then publish the signed targets metadata that
    makes it a release. Without --targets the bytes are stored, not released."""
    signed = rules.load(targets.read_bytes(), Targets.type).signed if targets is not None else None

    async def go(api: FirmwareClient) -> None:
        wanted = artifact_id
        existing = {a.id: a for a in await api.artifacts()}
        if signed is not None and wanted is None:
            wanted = _target_for(signed, file, set(existing))
        target = signed.targets.get(wanted) if signed is not None and wanted is not None else None
        custom = dict(target.custom) if target is not None else {}
        release_name, release_version = name or custom.get("name"), version or custom.get("version")
        if not release_name or not release_version:
            raise typer.BadParameter("give --name and --version (or --targets listing FILE)")
        have = existing.get(wanted or "")
        if target is not None and have is not None and have.sha256 == target.hashes.get("sha256"):
            console.print(f"{have.id} is stored already ({have.length} bytes, sha256 {have.sha256})")
        else:
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
                task = progress.add_task(f"uploading {file.name}", total=file.stat().st_size)
                stored = await api.upload(
                    _stream(file, progress, task), str(release_name), str(release_version), wanted
                )
            console.print(f"stored {stored.id}: {stored.length} bytes, sha256 {stored.sha256}")
        if targets is not None:
            published = await api.publish_targets(targets.read_bytes())
            console.print(f"released: targets v{published.version} lists {', '.join(published.targets)}")

    _client(go)


@firmware.command("list")
def list_artifacts() -> None:
    """Artifacts, oldest first, and whether the current targets metadata lists them."""
    items = _client(lambda api: api.artifacts())
    table = Table("id", "name", "version", "bytes", "released", "expires")
    for item in items:
        table.add_row(
            item.id, item.name, item.version, str(item.length), "yes" if item.released else "no", item.expires or ""
        )
    console.print(table)


@firmware.command()
def get(artifact_id: str) -> None:
    """One artifact as JSON."""
    print_json(_client(lambda api: api.artifact(artifact_id)))


@firmware.command()
def delete(
    artifact_id: str,
    key: Annotated[
        list[Path] | None, typer.Option("--key", help="targets key(s), when the artifact is released")
    ] = None,
    expires_days: int = 365,
    root: Pinned = None,
) -> None:
    """Remove an artifact: first sign and publish targets metadata without it (when it is listed),
    then remove its bytes."""

    async def go(api: FirmwareClient) -> None:
        current = await _current_targets(api, root)
        if current is not None and artifact_id in current.targets:
            if not key:
                raise typer.BadParameter(f"{artifact_id} is a signed target: give --key to sign it out")
            expires = datetime.now(UTC) + timedelta(days=expires_days)
            signed = rules.signed_by(rules.targets_without(current, artifact_id, expires), _signers(key))
            published = await api.publish_targets(signed.to_bytes())
            console.print(f"targets v{published.version} no longer lists {artifact_id}")
        await api.delete(artifact_id)
        console.print(f"deleted {artifact_id}")

    _client(go)


@firmware.command()
def keys(new: Annotated[Path | None, typer.Option(help="write a new ed25519 private key (PEM) here")] = None) -> None:
    """The current root's roles, key ids and thresholds; or, with --new, make a key."""
    if new is not None:
        if new.exists():
            raise typer.BadParameter(f"{new} exists")
        new.write_bytes(rules.new_private_pem())
        new.chmod(0o600)
        signer = rules.pem_signer(new.read_bytes())
        public = new.with_suffix(".pub.pem")
        public.write_bytes(rules.public_pem(signer))
        console.print(f"key {signer.public_key.keyid} → {new} (public half: {public})")
        return
    view = _client(lambda api: api.keys())
    console.print(f"root v{view.root_version} (expires {view.root_expires}); targets v{view.targets_version}")
    table = Table("role", "threshold", "key ids")
    for role in view.roles:
        table.add_row(role.role, str(role.threshold), "\n".join(role.keyids))
    console.print(table)


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        role, sep, rest = value.partition("=")
        if not sep or role not in rules.ROLES:
            raise typer.BadParameter(f"{what} {value!r}: ROLE=… with ROLE one of {', '.join(rules.ROLES)}")
        pairs.append((role, rest))
    return pairs


@firmware.command()
def rotate(
    key: Keys,
    add: Annotated[list[str] | None, typer.Option(help="ROLE=PEM: a key to add (public or private PEM)")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="ROLE=KEYID: a key to remove")] = None,
    threshold: Annotated[list[str] | None, typer.Option(help="ROLE=N: a new threshold")] = None,
    expires_days: int = 365,
    out: Annotated[Path | None, typer.Option(help="also write the new root here")] = None,
) -> None:
    """Publish the next root: the current one with the changes, signed by the --key root keys
    (the old root's threshold, plus the new root's own when it changes root keys). Devices
    follow it from the root they trust, even after being offline across several rotations."""
    changes: dict[str, rules.RootChange] = {}
    for role, pem in _pairs(add or [], "--add"):
        public: Key = rules.pem_public_key(Path(pem).read_bytes())
        changes.setdefault(role, rules.RootChange()).add.append(public)
    for role, key_id in _pairs(remove or [], "--remove"):
        changes.setdefault(role, rules.RootChange()).remove.append(key_id)
    for role, number in _pairs(threshold or [], "--threshold"):
        if not number.isdigit():
            raise typer.BadParameter(f"--threshold {role}={number}: a whole number")
        changes.setdefault(role, rules.RootChange()).threshold = int(number)
    signers = _signers(key)

    async def go(api: FirmwareClient) -> None:
        data = await api.metadata("root.json")
        if data is None:
            raise typer.BadParameter("the suite has no root yet")
        current: Metadata[Root] = rules.load(data, Root.type)
        if not rules.verification(current.signed, Root.type, current).ok:
            raise typer.BadParameter("the suite's current root does not verify against itself")
        try:
            new = rules.rotated(current.signed, changes, datetime.now(UTC) + timedelta(days=expires_days))
        except TwinError as error:
            raise typer.BadParameter(str(error)) from None
        rules.signed_by(new, signers)
        if out is not None:
            out.write_bytes(new.to_bytes())
        published = await api.publish_root(new.to_bytes())
        console.print(f"root v{published.version} published (expires {published.expires})")

    _client(go)


@firmware.command()
def metadata(file_name: str = typer.Argument(..., help="root.json, targets.json, 3.root.json, …")) -> None:
    """Print a published TUF metadata file."""
    data = _client(lambda api: api.metadata(file_name))
    if data is None:
        console.print(f"[red]404[/] no metadata {file_name}")
        raise typer.Exit(1)
    console.print_json(data.decode())


@firmware.command()
def url(
    artifact_id: str,
    device_id: str,
    ttl: int = typer.Option(3600, help="seconds the URL is valid"),
) -> None:
    """Mint a download URL of an artifact for one device (what the delta app does on its own)."""
    minted = _client(lambda api: api.mint_url(artifact_id, UrlRequest(device_id=device_id, ttl=ttl)))
    console.print(minted.url, soft_wrap=True)


@firmware.command()
def downloads(artifact_id: str) -> None:
    """Downloads of an artifact being served now, with bytes sent."""
    table = Table("device", "from", "sent")
    for d in _client(lambda api: api.downloads(artifact_id)).items:
        table.add_row(d.device_id, str(d.start), f"{d.sent:,}")
    console.print(table)

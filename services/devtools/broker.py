"""Mosquitto for local runs and tests: config, per-device credentials and the topic ACL.

Two listeners: plain MQTT with username/password, and MQTT over TLS (a locally made CA) where a
device must present a client certificate whose subject CN is its device id; the broker takes that
CN as the username (`use_identity_as_username`). Either way the ACL keeps a device to its own
topics (patterns on `%u`). Passwords are stored as Mosquitto's PBKDF2-SHA512 entries (`$7$`),
written here directly so a thousand simulated devices are provisioned in milliseconds instead of a
thousand `mosquitto_passwd` calls. The plugin `mosquitto/strip_sdk_suffix.c` (built by `make
setup`) strips the `?SDK=…&Version=…` the AWS IoT Device SDK appends to usernames.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
from collections.abc import Iterable
from pathlib import Path

from services.contracts.topics import PROFILES
from services.devtools.pki import LocalCA

SERVICE_USER = "twinfleet-service"
PBKDF2_ITERATIONS = 101


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto password-file hash (`$7$iterations$salt$hash`, PBKDF2-SHA512)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text() -> str:
    lines = [f"user {SERVICE_USER}", "topic readwrite #", "topic readwrite $aws/#", ""]
    for prof in PROFILES.values():
        lines.append(f"pattern readwrite {prof.device_topics('%u')}")
    for channel in ("events", "commands", "agent"):
        lines.append(f"pattern readwrite %u/{channel}/#")
    lines.append("pattern readwrite %u/events")
    return "\n".join(lines) + "\n"


PLUGIN_SOURCE = Path(__file__).with_name("mosquitto") / "strip_sdk_suffix.c"


def sdk_suffix_plugin() -> Path | None:
    """The built plugin (`scripts/build-broker-plugin.sh`, keyed by the source's hash), if built."""
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "broker"
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:16]
    path = cache / f"strip_sdk_suffix-{digest}.so"
    return path if path.exists() else None


def config_text(
    directory: Path,
    port: int,
    *,
    tls_port: int | None = None,
    ca: LocalCA | None = None,
    plugin: Path | None = None,
    host: str = "127.0.0.1",
    run_as_me: bool = True,
    persistence: bool = True,
    tcp_nodelay: bool = True,
) -> str:
    """Mosquitto's configuration: accounts only (password file and ACL in `directory`), listening
    on `host:port`, and with `tls_port` and `ca` a TLS listener on which a device's client
    certificate (CN = device id) is its identity; `plugin`: the SDK-suffix plugin; `run_as_me`: as
    whoever starts it (the run directory is ours, not the `mosquitto` system user's);
    `persistence`: sessions and queued messages survive a restart; `tcp_nodelay` turns Nagle's
    algorithm off on every client socket (with it on, each small reply waits for the previous
    segment's ACK: tens of ms on loopback under load; `make bench` measures both)."""
    lines = [f"user {pwd.getpwuid(os.geteuid()).pw_name}"] if run_as_me else []
    lines += ["per_listener_settings false", f"listener {port} {host}"]
    if tls_port is not None and ca is not None:
        lines += [
            f"listener {tls_port} {host}",
            f"cafile {ca.ca_cert}",
            f"certfile {ca.server_cert}",
            f"keyfile {ca.server_key}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    lines += [
        "allow_anonymous false",
        *([f"plugin {plugin}"] if plugin is not None else []),
        f"password_file {directory / 'passwd'}",
        f"acl_file {directory / 'acl'}",
    ]
    if persistence:
        lines += ["persistence true", f"persistence_location {directory}/", "autosave_interval 1"]
    lines += [
        "max_queued_messages 200000",
        "max_inflight_messages 1000",
        "max_keepalive 300",
        f"set_tcp_nodelay {'true' if tcp_nodelay else 'false'}",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
    ]
    return "\n".join(lines) + "\n"


class BrokerAccounts:
    """The password file of a local broker (service account + devices)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "passwd"

    def initialise(self, service_password: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "acl").write_text(acl_text())
        if not self.path.exists():
            self.path.write_text("")
        self.set_many([(SERVICE_USER, service_password)])

    def set_many(self, accounts: Iterable[tuple[str, str]]) -> None:
        entries = dict(self._read())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(password_file(entries, accounts))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def users(self) -> list[str]:
        return [u for u, _ in self._read()]

    def _read(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            user, sep, digest = line.partition(":")
            if sep:
                rows.append((user, digest))
        return rows


def password_file(entries: dict[str, str], accounts: Iterable[tuple[str, str]]) -> str:
    """The password file's text: `entries` (user -> hash) with `accounts` (user, password) set."""
    updated = {**entries, **{user: hash_password(password) for user, password in accounts}}
    return "".join(f"{user}:{digest}\n" for user, digest in updated.items())


def new_secret() -> str:
    return secrets.token_hex(16)

"""Local processes started and stopped by pid: free loopback ports, readiness waits, clean stops."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_HANDED_OUT: set[int] = set()


LISTEN_PORTS = range(20000, 32768)
"""Where listening ports are chosen: below the kernel's ephemeral range (32768..60999), from which
every outgoing connection on the machine takes its local port, so a busy machine (a benchmark's
thousand connections) cannot take a port between its choice and the bind."""


def free_port() -> int:
    """A loopback port free now and not handed out before by this process: ports are chosen
    long before the processes bind them."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 300:
                    return
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout}s ({last})")


@dataclass
class ManagedProcess:
    """One child process with its log file; stopped by its own pid, never by name."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def built_binary(variable: str, pattern: str, missing: str) -> str:
    """A program built into the cache: `variable` names it, else the newest `pattern` match in
    the cache's `bin/`; FileNotFoundError saying how to build it (`missing`) otherwise."""
    explicit = os.environ.get(variable)
    if explicit:
        return explicit
    cache = Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "bin"
    found = sorted(cache.glob(pattern)) if cache.exists() else []
    if not found:
        raise FileNotFoundError(missing)
    return str(found[-1])

"""The software handler: a desired `software` reference becomes an installed release.

verify the release with the TUF client workflow (`trust.py`: the provisioned root, rotations,
timestamp → snapshot → targets, expiry, rollback; right artifact, no older version) → download
with resume (HTTP Range, the late-bound URL from the delta or a temporary credential got with the
device's own credentials; from the object store or the firmware app) → check length and SHA-256 →
[wait: for the install trigger of a download-only update, or for local consent] → install through
an installer → health check → commit or roll back. Each step is reported under `software` as it
happens: DOWNLOADING → DOWNLOADED → VERIFIED → [WAITING_FOR_INSTALL | WAITING_FOR_CONSENT →]
INSTALLING → UPDATED | FAILED(failure, reason) | ROLLED_BACK, with the desired `retry` it answers.

A failed attempt keeps the running version and says why (`failure` names the kind: download,
metadata, signature, …); the same artifact is not tried again until the twin desires another one
or a new `retry`. A device that asks for consent (`software_require_consent`) waits, downloaded and
verified, until someone on the device answers `POST /v1/software/consent`, or until the
auto-consent deadline (the rollout's `autoConsentAt`, or its own `software_auto_consent_seconds`).
The last outcome and the consent answers survive restarts (state files); a verified download waits
on disk; a download cut short resumes where it stopped, after a dropped link or an agent restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from services.device_agent.handlers import SERVICE_ACCOUNT, HandlerFailed, kubernetes_client, write_atomically
from services.device_agent.trust import TrustedReleases
from services.domain.software.release import Refusal, Release, UpdateRefused, check_download, check_offer
from services.domain.software.twin_key import (
    FailureKind,
    Gate,
    UpdateStatus,
    desired_artifact,
    install_gate,
    retry_of,
    satisfied,
)

log = structlog.get_logger()
Report = Callable[[Any], Awaitable[None]]


class InstallFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpdateFailed(Exception):
    """An attempt failed for a reason of `kind` (reported as `failure`, what rollouts retry by)."""

    def __init__(self, kind: FailureKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


REFUSAL_KINDS = {
    Refusal.MALFORMED: FailureKind.METADATA,
    Refusal.MISMATCH: FailureKind.METADATA,
    Refusal.UNKNOWN: FailureKind.METADATA,
    Refusal.UNAVAILABLE: FailureKind.METADATA,
    Refusal.SIGNATURE: FailureKind.SIGNATURE,
    Refusal.EXPIRED: FailureKind.EXPIRED,
    Refusal.ROLLBACK: FailureKind.VERSION,
    Refusal.LENGTH: FailureKind.INTEGRITY,
    Refusal.HASH: FailureKind.INTEGRITY,
}


class NotWaiting(Exception):
    """Consent was given while no update waits for it."""


class Installer(Protocol):
    """Puts a verified release in place; `healthy` decides between `commit` and `rollback`."""

    async def install(self, path: Path, release: Release) -> None: ...

    async def healthy(self, release: Release) -> bool: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


async def run_command(argv: list[str], timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"timed out after {timeout:g}s"
    return int(process.returncode or 0), output.decode(errors="replace")[-400:]


def _argv(template: str, path: Path | None = None, release: Release | None = None) -> list[str]:
    values = {"file": str(path or ""), "version": release.version if release else ""}
    return [part.format(**values) for part in shlex.split(template)]


class CommandHealth:
    """Healthy when a command exits 0 (no command: healthy once installed)."""

    def __init__(self, command: str, timeout: float = 60.0) -> None:
        self.command = command
        self.timeout = timeout

    async def check(self, release: Release) -> bool:
        if not self.command:
            return True
        code, output = await run_command(_argv(self.command, release=release), self.timeout)
        if code != 0:
            log.warning("health check failed", code=code, output=output)
        return code == 0


class FileSwapInstaller:
    """Swaps one file for the release's bytes, keeping the old one until the health check passed
    (for tests, and devices whose software is a single binary)."""

    def __init__(self, target: Path, health: CommandHealth) -> None:
        self.target = target
        self.previous = target.with_name(f"{target.name}.previous")
        self.health = health

    async def install(self, path: Path, release: Release) -> None:
        def swap() -> None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            # A backup left by an install cut short belongs to the committed version: keep it.
            if self.target.exists() and not self.previous.exists():
                os.replace(self.target, self.previous)
            staging = self.target.with_name(f".{self.target.name}.new")
            shutil.copyfile(path, staging)
            os.chmod(staging, 0o755)
            os.replace(staging, self.target)

        try:
            await asyncio.to_thread(swap)
        except OSError as error:
            raise InstallFailed(f"cannot swap {self.target.name}: {error.strerror}") from None

    async def healthy(self, release: Release) -> bool:
        return await self.health.check(release)

    async def commit(self) -> None:
        self.previous.unlink(missing_ok=True)

    async def rollback(self) -> None:
        if self.previous.exists():
            os.replace(self.previous, self.target)


class CommandInstaller:
    """Runs the device's update tool: e.g. `swupdate -i {file}`, `rauc install {file}` or
    `mender-update install {file}`, with optional commit and rollback commands (`rauc status
    mark-good`, `mender-update commit` / `mender-update rollback`)."""

    def __init__(self, install: str, commit: str, rollback: str, health: CommandHealth, timeout: float = 1800) -> None:
        self.install_command = install
        self.commit_command = commit
        self.rollback_command = rollback
        self.health = health
        self.timeout = timeout

    async def install(self, path: Path, release: Release) -> None:
        code, output = await run_command(_argv(self.install_command, path, release), self.timeout)
        if code != 0:
            raise InstallFailed(f"install command exited {code}: {output.strip()[-200:]}")

    async def healthy(self, release: Release) -> bool:
        return await self.health.check(release)

    async def commit(self) -> None:
        if self.commit_command:
            await run_command(_argv(self.commit_command), self.timeout)

    async def rollback(self) -> None:
        if self.rollback_command:
            await run_command(_argv(self.rollback_command), self.timeout)


class DeploymentInstaller:
    """On K3s: the release names a container image (`custom.image`); the installer patches one
    container of a Deployment to it and waits until the rollout is complete and available (the
    health check); rolling back patches the previous image back. Uses the pod's service account
    (RBAC: get/patch on that Deployment)."""

    def __init__(
        self,
        namespace: str,
        deployment: str,
        container: str,
        api: str = "https://kubernetes.default.svc",
        timeout: float = 300.0,
        credentials: Path = SERVICE_ACCOUNT,
    ) -> None:
        self.url = f"{api}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"
        self.container = container
        self.timeout = timeout
        self.credentials = credentials
        self.previous_image: str | None = None

    def _client(self) -> httpx.AsyncClient:
        return kubernetes_client(self.credentials, timeout=30)

    async def _set_image(self, image: str) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": self.container, "image": image}]}}}}
        async with self._client() as client:
            response = await client.patch(
                self.url, json=patch, headers={"Content-Type": "application/strategic-merge-patch+json"}
            )
        if response.status_code >= 300:
            raise InstallFailed(f"Deployment patch refused: {response.status_code} {response.text[:200]}")

    async def install(self, path: Path, release: Release) -> None:
        image = release.custom.get("image")
        if not isinstance(image, str) or not image:
            raise InstallFailed("release names no container image (custom.image)")
        async with self._client() as client:
            response = await client.get(self.url)
        if response.status_code != 200:
            raise InstallFailed(f"cannot read the Deployment: {response.status_code}")
        containers = response.json()["spec"]["template"]["spec"]["containers"]
        current = [c.get("image") for c in containers if c.get("name") == self.container]
        if not current:
            raise InstallFailed(f"the Deployment has no container {self.container!r}")
        self.previous_image = current[0]
        await self._set_image(image)

    async def healthy(self, release: Release) -> bool:
        deadline = time.monotonic() + self.timeout
        async with self._client() as client:
            while time.monotonic() < deadline:
                response = await client.get(self.url)
                if response.status_code == 200 and rollout_complete(response.json()):
                    return True
                await asyncio.sleep(2)
        return False

    async def commit(self) -> None:
        self.previous_image = None

    async def rollback(self) -> None:
        if self.previous_image:
            await self._set_image(self.previous_image)


def rollout_complete(deployment: Mapping[str, Any]) -> bool:
    """What `kubectl rollout status` waits for: the new generation observed, every replica
    updated and available, none of the old left."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    wanted = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration", 0)) >= int(deployment.get("metadata", {}).get("generation", 0))
        and int(status.get("updatedReplicas", 0)) == wanted
        and int(status.get("availableReplicas", 0)) == wanted
        and int(status.get("replicas", 0)) == wanted
    )


class Firmware:
    """The firmware service as the device sees it: credentials, proxied downloads."""

    def __init__(self, base_url: str, device_id: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = httpx.BasicAuth(device_id, password)
        self.timeout = timeout

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout)

    async def credential(self, artifact: str) -> tuple[str, str]:
        """(credential, url): with an object store the URL to download from with it, else ""."""
        try:
            async with self.client() as client:
                response = await client.post(f"{self.base_url}/v1/artifacts/{artifact}/credentials", auth=self.auth)
        except httpx.HTTPError as error:
            raise HandlerFailed(f"download credential not got: {error!r}") from None
        if response.status_code != 200:
            raise HandlerFailed(f"download credential refused: {response.status_code} {_message(response)}")
        answer = response.json()
        return str(answer["credential"]), str(answer.get("url") or "")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.text[:200]


class SoftwareHandler:
    key = "software"

    def __init__(
        self,
        firmware: Firmware,
        trust: TrustedReleases,
        installer: Installer,
        work_dir: Path,
        factory_version: str = "",
        retries: int = 20,
        retry_delay: float = 1.0,
        require_consent: bool = False,
        auto_consent_seconds: float = 0.0,
    ) -> None:
        self.firmware = firmware
        self.trust = trust
        self.installer = installer
        self.work_dir = work_dir
        self.state_file = work_dir / "software.json"
        self.consent_file = work_dir / "consent.json"
        self.factory_version = factory_version
        self.retries = retries
        self.retry_delay = retry_delay
        self.require_consent = require_consent
        self.auto_consent_seconds = auto_consent_seconds
        """Consent is assumed this long after the device started waiting for it (0: never)."""
        self.report: Report | None = None
        """Set by the agent: sends an intermediate value of the key (progress) to the twin."""
        self.wake: Callable[[], None] | None = None
        """Set by the agent: asks for a reconcile (consent given, auto-consent deadline)."""
        self._timer: asyncio.TimerHandle | None = None

    def satisfied(self, current: Any, desired: Any) -> bool:
        """Nothing to do now (see `twin_key.satisfied`); a consent answer for the waiting attempt
        means there is: install, or fail it as refused."""
        return satisfied(current, desired, self._answer(desired) is not None, time.time())

    # -- consent ---------------------------------------------------------------------------
    def _answers(self) -> dict[str, bool]:
        try:
            value = json.loads(self.consent_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): bool(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @staticmethod
    def _consent_key(artifact: str, retry: int) -> str:
        return f"{artifact}#{retry}"

    def _answer(self, desired: Any) -> bool | None:
        artifact = desired_artifact(desired)
        if artifact is None:
            return None
        return self._answers().get(self._consent_key(artifact, retry_of(desired)))

    async def consent(self, artifact: str | None, accept: bool) -> str:
        """Answer the update waiting for consent (the one named, or whichever waits); returns its
        artifact. Raises `NotWaiting` when none does."""
        current = await self.current()
        waiting = (
            isinstance(current, dict)
            and current.get("status") == UpdateStatus.WAITING_FOR_CONSENT
            and (artifact is None or current.get("attempt") == artifact)
        )
        if not waiting:
            raise NotWaiting(f"no update of {artifact or 'any artifact'} waits for consent")
        assert isinstance(current, dict)
        name = str(current["attempt"])
        answers = self._answers() | {self._consent_key(name, retry_of(current)): accept}
        await asyncio.to_thread(write_atomically, self.consent_file, json.dumps(answers, sort_keys=True))
        log.info("consent answered", artifact=name, accept=accept)
        if self.wake is not None:
            self.wake()
        return name

    def _deadline(self, artifact: str, retry: int, running: Any, now: float) -> float | None:
        """The device's own auto-consent time for this attempt (kept from when it began waiting)."""
        if not self.auto_consent_seconds:
            return None
        if (
            isinstance(running, dict)
            and running.get("status") == UpdateStatus.WAITING_FOR_CONSENT
            and running.get("attempt") == artifact
            and retry_of(running) == retry
            and isinstance(running.get("autoConsentAt"), (int, float))
        ):
            return float(running["autoConsentAt"])
        return now + self.auto_consent_seconds

    def _wake_at(self, at: float) -> None:
        if self.wake is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - time.time()) + 0.2, self.wake)

    async def current(self) -> Any:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            if self.factory_version:
                return {"version": self.factory_version, "status": UpdateStatus.UPDATED.value}
            return None
        except ValueError:
            return {"status": UpdateStatus.FAILED.value, "reason": "software state file is not valid JSON"}

    async def apply(self, desired: Any) -> Any:
        artifact = desired_artifact(desired)
        if artifact is None:
            raise HandlerFailed('software must be {"artifact": "<id>", ...}')
        running = await self.current() or {}
        kept = {k: running[k] for k in ("artifact", "version") if isinstance(running, dict) and k in running}
        retry = retry_of(desired)
        attempt: dict[str, Any] = {**kept, "attempt": artifact, **({"retry": retry} if retry else {})}
        try:
            release = await self.trust.release(artifact)
            check_offer(release, artifact, kept.get("version"))
            attempt["attemptVersion"] = release.version
            path = self._partial(artifact)
            if not path.exists() or path.stat().st_size != release.length:
                await self._progress({**attempt, "status": UpdateStatus.DOWNLOADING.value, "progress": 0})
                try:
                    path = await self._download(artifact, release, str(desired.get("url") or ""), attempt)
                except HandlerFailed as error:
                    raise UpdateFailed(FailureKind.DOWNLOAD, error.reason) from None
                await self._progress({**attempt, "status": UpdateStatus.DOWNLOADED.value})
            check_download(release, *await asyncio.to_thread(_digest, path))
            await self._progress({**attempt, "status": UpdateStatus.VERIFIED.value})
            waiting = await self._gate(desired, attempt, running)
            if waiting is not None:
                return waiting  # downloaded and verified: the file waits on disk
            await self._progress({**attempt, "status": UpdateStatus.INSTALLING.value})
            await self.installer.install(path, release)
        except UpdateRefused as error:
            return await self._failed(artifact, attempt, REFUSAL_KINDS[error.refusal], error.reason)
        except UpdateFailed as error:
            return await self._failed(artifact, attempt, error.kind, error.reason)
        except InstallFailed as error:
            return await self._failed(artifact, attempt, FailureKind.INSTALL, error.reason)
        if not await self.installer.healthy(release):
            await self.installer.rollback()
            self._discard(artifact)
            reason = f"{release.version} failed its health check; {kept.get('version') or 'previous'} restored"
            return await self._finish({**attempt, "status": UpdateStatus.ROLLED_BACK.value, "reason": reason})
        await self.installer.commit()
        self._discard(artifact)
        done = {"artifact": artifact, "version": release.version, "status": UpdateStatus.UPDATED.value}
        return await self._finish(done | ({"retry": retry} if retry else {}))

    async def _gate(self, desired: Any, attempt: dict[str, Any], running: Any) -> dict[str, Any] | None:
        """The waiting report when the install must wait (trigger or consent), else None; a
        refused consent fails the attempt."""
        artifact, retry, now = str(attempt["attempt"]), retry_of(desired), time.time()
        answer = self._answer(desired)
        if answer is False:
            raise UpdateFailed(FailureKind.CONSENT, "the install was refused on the device")
        deadline = self._deadline(artifact, retry, running, now)
        gate = install_gate(desired, self.require_consent, answer is True, deadline, now)
        if gate is Gate.WAIT_FOR_INSTALL:
            return await self._finish({**attempt, "status": UpdateStatus.WAITING_FOR_INSTALL.value})
        if gate is Gate.WAIT_FOR_CONSENT:
            deadlines = [d for d in (deadline, desired.get("autoConsentAt")) if isinstance(d, (int, float))]
            value = {**attempt, "status": UpdateStatus.WAITING_FOR_CONSENT.value}
            if deadlines:
                value["autoConsentAt"] = min(deadlines)
                self._wake_at(min(deadlines))
            return await self._finish(value)
        return None

    async def _failed(self, artifact: str, attempt: dict[str, Any], kind: FailureKind, reason: str) -> Any:
        self._discard(artifact)
        return await self._finish(
            {**attempt, "status": UpdateStatus.FAILED.value, "failure": kind.value, "reason": reason}
        )

    async def _finish(self, value: dict[str, Any]) -> dict[str, Any]:
        value = {**value, "ts": int(time.time())}
        await asyncio.to_thread(write_atomically, self.state_file, json.dumps(value, sort_keys=True))
        log.info("software update finished", **{k: v for k, v in value.items() if k != "ts"})
        return value

    async def _progress(self, value: dict[str, Any]) -> None:
        if self.report is not None:
            await self.report(value)

    def _partial(self, artifact: str) -> Path:
        return self.work_dir / "downloads" / f"{artifact}.part"

    def _discard(self, artifact: str) -> None:
        self._partial(artifact).unlink(missing_ok=True)

    async def _download(self, artifact: str, release: Release, url: str, attempt: dict[str, Any]) -> Path:
        """Download into a partial file, resuming from its length after every break; the
        late-bound URL first, a temporary credential when there is none or it stopped working."""
        path = self._partial(artifact)
        path.parent.mkdir(parents=True, exist_ok=True)
        credential: str | None = None
        failures = 0
        while (have := path.stat().st_size if path.exists() else 0) < release.length:
            if not url and credential is None:
                credential, url = await self.firmware.credential(artifact)
            try:
                refused = await self._fetch(path, have, release, attempt, url, credential)
            except httpx.TransportError as error:
                refused = f"link dropped: {error!r}"
                log.info("download interrupted; resuming", artifact=artifact, have=path.stat().st_size)
                await asyncio.sleep(self.retry_delay)
            if refused is None and path.exists() and path.stat().st_size > have:
                continue
            refused = refused or "no bytes received"
            failures += 1
            if failures > self.retries:
                raise HandlerFailed(f"download failed after {failures} tries: {refused}")
            if refused.startswith("403") and url:
                url, credential = "", None  # a URL that stopped working (expired): a fresh credential
            elif refused.startswith("403"):
                credential = None  # expired meanwhile: a fresh one
        return path

    async def _fetch(
        self, path: Path, have: int, release: Release, attempt: dict[str, Any], url: str, credential: str | None
    ) -> str | None:
        """Append what the service sends from byte `have` on; None, or why it refused."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        auth: httpx.Auth | None = None
        if not url:
            headers["X-Download-Credential"] = str(credential)
            auth = self.firmware.auth
        target = url or f"{self.firmware.base_url}/v1/artifacts/{release.artifact}/download"
        step = max(release.length // 4, 1)
        async with self.firmware.client() as client, client.stream("GET", target, headers=headers, auth=auth) as r:
            if r.status_code not in (200, 206):
                return f"{r.status_code} {(await r.aread())[:200].decode(errors='replace')}"
            with path.open("ab" if r.status_code == 206 else "wb") as file:
                reported = file.tell()
                async for data in r.aiter_bytes():
                    file.write(data)
                    if file.tell() > release.length:
                        raise UpdateRefused(Refusal.LENGTH, f"more than the {release.length} bytes expected")
                    if file.tell() - reported >= step:
                        reported = file.tell()
                        percent = reported * 100 // release.length
                        await self._progress({**attempt, "status": UpdateStatus.DOWNLOADING.value, "progress": percent})
                file.flush()
                os.fsync(file.fileno())
        return None


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    length = 0
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
            length += len(block)
    return length, digest.hexdigest()

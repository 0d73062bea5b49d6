"""Firmware figures, each measured twice (the machine is shared: both runs are reported), each
download next to its floor measured right after it.

- Download from the store: one released artifact, a download URL minted per device (a SAS on
  Azurite, as the delta carries it), then N devices (100, then 1,000) download it at once straight
  from the store (one connection each, streamed, SHA-256 checked); aggregate MB/s and p50/p99 s
  per download. Azurite's and the firmware app's resident memory and CPU time are sampled
  meanwhile (the app is not in the path: its CPU stays near zero).
- Proxied (stores that cannot pre-sign): the same through the firmware app from chunk objects on
  disk (the Dapr binding), 100 devices; the app's and its daprd's memory sampled.
- Floor: the same bytes read from a file on disk by as many concurrent readers (threads, 1 MiB
  blocks, SHA-256): reading and hashing without HTTP or a store (most likely the page cache).
- Upload: a 1 GiB artifact streamed into the firmware app (1 MiB pieces of a repeated random
  buffer) and on into Azurite in staged blocks; MB/s and the firmware app's peak resident memory
  (it holds a few blocks at a time, whatever the size).

MB = 10^6 bytes; RSS in MiB. Everything on 127.0.0.1; every loop bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from services.devtools.stack import Stack
from services.domain.software import repository as rules
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP, TWIN_STORE_APP

MB = 1_000_000
MIB = 1 << 20
BLOCK = 1 << 20
"""Bytes per upload piece and per floor read."""
MAX_DEVICES = 1000
MAX_SIZE_MIB = 256
MAX_UPLOAD_MIB = 4096
DOWNLOAD_TIMEOUT = 600.0
"""Seconds the whole concurrent download may take before the bench gives up on it."""
SAMPLE_EVERY = 0.05
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Peak VmRSS of some processes, sampled every `SAMPLE_EVERY` s from a thread (so a busy event
    loop does not skip samples)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peaks = dict.fromkeys(pids, 0.0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks[name], rss_mib(pid))
            self.samples += 1
            if self._stop.wait(SAMPLE_EVERY):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def quantile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Outcome:
    seconds: float
    error: str = ""
    detail: str = ""


async def download_all(urls: list[str], expected: str, size: int) -> tuple[float, list[Outcome]]:
    """All URLs downloaded at once; (wall seconds, one outcome per download)."""
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=len(urls))
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits) as client:

        async def one(url: str) -> Outcome:
            started = time.perf_counter()
            digest = hashlib.sha256()
            received = 0
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        text = (await response.aread())[:300].decode(errors="replace")
                        return Outcome(time.perf_counter() - started, f"HTTP {response.status_code}", text)
                    async for piece in response.aiter_bytes():
                        digest.update(piece)
                        received += len(piece)
            except httpx.HTTPError as error:
                return Outcome(time.perf_counter() - started, type(error).__name__, str(error))
            seconds = time.perf_counter() - started
            if received != size:
                return Outcome(seconds, "short body", f"{received} of {size} bytes")
            if digest.hexdigest() != expected:
                return Outcome(seconds, "sha256 mismatch", digest.hexdigest())
            return Outcome(seconds)

        started = time.perf_counter()
        tasks = [asyncio.create_task(one(u)) for u in urls]
        done, pending = await asyncio.wait(tasks, timeout=DOWNLOAD_TIMEOUT)
        elapsed = time.perf_counter() - started
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        late = Outcome(elapsed, "timed out", f"not done after {DOWNLOAD_TIMEOUT:g} s")
        return elapsed, [t.result() if t in done else late for t in tasks]


def floor_read(path: Path, readers: int, expected: str) -> float:
    """`readers` threads each read `path` in 1 MiB blocks and hash it; aggregate MB/s."""

    def one() -> str:
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as f:
            while block := f.read(BLOCK):
                digest.update(block)
        return digest.hexdigest()

    with ThreadPoolExecutor(max_workers=readers) as pool:
        started = time.perf_counter()
        digests = list(pool.map(lambda _: one(), range(readers)))
        elapsed = time.perf_counter() - started
    if any(d != expected for d in digests):
        raise RuntimeError("floor read back other bytes than were written")
    return readers * path.stat().st_size / elapsed / MB


@dataclass
class DownloadFigures:
    path: str
    """`store` (straight from Azurite) or `proxied` (through the firmware app)."""
    devices: int
    run: int
    size: int
    mb_s: float
    p50_s: float
    p99_s: float
    floor_mb_s: float
    verified: int
    peaks_mib: dict[str, float]
    """Peak resident memory of the processes serving the bytes."""
    cpu_s: dict[str, float]
    """CPU seconds each of them spent during the download."""
    failures: dict[str, int] = field(default_factory=dict)
    first_failure: str = ""


@dataclass
class UploadFigures:
    run: int
    size: int
    mb_s: float
    app_rss_before_mib: float
    app_rss_peak_mib: float


@dataclass
class FirmwareFigures:
    downloads: list[DownloadFigures]
    uploads: list[UploadFigures]


async def publish(client: httpx.AsyncClient, stack: Stack, data: bytes, version: str) -> str:
    """Upload `data` and release it (targets signed with the stack's release manager key)."""
    stored = (await client.post("/v1/artifacts", params={"name": "bench-fw", "version": version}, content=data)).json()
    current = await client.get("/v1/metadata/targets.json")
    targets = rules.load(current.content, "targets").signed if current.status_code == 200 else None
    custom = {"name": "bench-fw", "version": version}
    until = datetime.now(UTC) + timedelta(days=1)
    signed = rules.targets_with(targets, stored["id"], stored["length"], stored["sha256"], custom, until)
    answer = await client.post(
        "/v1/metadata/targets", content=rules.signed_by(signed, [stack.release_team.signer("targets", 1)]).to_bytes()
    )
    if answer.status_code != 201:
        raise RuntimeError(f"publishing the release answered {answer.status_code}: {answer.text[:300]}")
    return str(stored["id"])


async def mint_urls(client: httpx.AsyncClient, artifact_id: str, devices: int) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with limit:
            answer = await client.post(
                f"/v1/artifacts/{artifact_id}/urls", json={"deviceId": f"bench-{i:04d}", "ttl": 3600}
            )
        if answer.status_code != 200:
            raise RuntimeError(f"minting a URL answered {answer.status_code}: {answer.text[:300]}")
        return str(answer.json()["url"])

    return list(await asyncio.gather(*(one(i) for i in range(devices))))


async def download_figures(
    urls: list[str], data: bytes, floor_file: Path, path: str, run: int, pids: dict[str, int]
) -> DownloadFigures:
    expected = hashlib.sha256(data).hexdigest()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    with RssSampler(pids) as sampler:
        wall, outcomes = await download_all(urls, expected, len(data))
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    floor = await asyncio.to_thread(floor_read, floor_file, len(urls), expected)
    good = [o.seconds for o in outcomes if not o.error]
    failed = [o for o in outcomes if o.error]
    return DownloadFigures(
        path=path,
        devices=len(urls),
        run=run,
        size=len(data),
        mb_s=len(good) * len(data) / wall / MB,
        p50_s=quantile(good, 50),
        p99_s=quantile(good, 99),
        floor_mb_s=floor,
        verified=len(good),
        peaks_mib=dict(sampler.peaks),
        cpu_s=cpu,
        failures=dict(Counter(o.error for o in failed)),
        first_failure=f"{failed[0].error}: {failed[0].detail}" if failed else "",
    )


async def upload_figures(client: httpx.AsyncClient, app_pid: int, size_mib: int, run: int) -> UploadFigures:
    """Stream `size_mib` MiB in (a 16 MiB random buffer repeated), check the stored digest, delete it."""
    pattern = os.urandom(16 * MIB)
    pieces = size_mib
    digest = hashlib.sha256()
    for i in range(pieces):
        digest.update(pattern[(i % 16) * MIB : (i % 16 + 1) * MIB])

    async def body() -> AsyncIterator[bytes]:
        for i in range(pieces):
            yield pattern[(i % 16) * MIB : (i % 16 + 1) * MIB]

    before = rss_mib(app_pid)
    with RssSampler({"app": app_pid}) as sampler:
        started = time.perf_counter()
        answer = await client.post(
            "/v1/artifacts", params={"name": "bench-upload", "version": f"{run}.0.0"}, content=body(), timeout=600
        )
        elapsed = time.perf_counter() - started
    if answer.status_code != 201 or answer.json()["sha256"] != digest.hexdigest():
        raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
    await client.delete(f"/v1/artifacts/{answer.json()['id']}")
    return UploadFigures(run, pieces * MIB, pieces * MIB / elapsed / MB, before, sampler.peaks["app"])


def _check(size_mib: float, device_counts: tuple[int, ...], upload_mib: int) -> None:
    if not all(1 <= d <= MAX_DEVICES for d in device_counts):
        raise ValueError(f"devices must be 1..{MAX_DEVICES}, not {device_counts}")
    if not 0 < size_mib <= MAX_SIZE_MIB:
        raise ValueError(f"artifact size must be in (0, {MAX_SIZE_MIB}] MiB, not {size_mib}")
    if not 0 < upload_mib <= MAX_UPLOAD_MIB:
        raise ValueError(f"upload size must be in (0, {MAX_UPLOAD_MIB}] MiB, not {upload_mib}")


async def store_figures(
    stack: Stack, data: bytes, floor_file: Path, device_counts: tuple[int, ...], upload_mib: int, repeats: int
) -> FirmwareFigures:
    app_pid = stack.procs[FIRMWARE_APP].pid
    store_pid = stack.procs["azurite"].pid
    assert app_pid is not None and store_pid is not None
    figures = FirmwareFigures([], [])
    async with httpx.AsyncClient(
        base_url=stack.app_url(FIRMWARE_APP), headers=stack.headers, timeout=HTTP_TIMEOUT
    ) as client:
        for run in range(1, repeats + 1):
            figures.uploads.append(await upload_figures(client, app_pid, upload_mib, run))
        artifact = await publish(client, stack, data, "1.0.0")
        urls = await mint_urls(client, artifact, max(device_counts))
    for devices in device_counts:
        for run in range(1, repeats + 1):
            pids = {"azurite": store_pid, "app": app_pid}
            figure = await download_figures(urls[:devices], data, floor_file, "store", run, pids)
            figures.downloads.append(figure)
    return figures


async def proxied_figures(
    stack: Stack, data: bytes, floor_file: Path, devices: int, repeats: int
) -> list[DownloadFigures]:
    pids = {"app": stack.procs[FIRMWARE_APP].pid, "daprd": stack.procs[f"{FIRMWARE_APP}-daprd"].pid}
    async with httpx.AsyncClient(
        base_url=stack.app_url(FIRMWARE_APP), headers=stack.headers, timeout=HTTP_TIMEOUT
    ) as client:
        artifact = await publish(client, stack, data, "1.0.0")
        urls = await mint_urls(client, artifact, devices)
    return [
        await download_figures(urls, data, floor_file, "proxied", run, {k: v for k, v in pids.items() if v})
        for run in range(1, repeats + 1)
    ]


def measure_firmware(
    base: Path,
    size_mib: float = 2,
    device_counts: tuple[int, ...] = (100, 1000),
    upload_mib: int = 1024,
    repeats: int = 2,
    proxied_devices: int = 100,
) -> FirmwareFigures:
    """Downloads from the store (and proxied) and uploads, each `repeats` times (see the module)."""
    _check(size_mib, (*device_counts, proxied_devices), upload_mib)
    data = os.urandom(int(size_mib * MIB))
    floor_file = base / "floor-artifact.bin"
    base.mkdir(parents=True, exist_ok=True)
    floor_file.write_bytes(data)
    apps = (TWIN_STORE_APP, ROLLOUT_APP, FIRMWARE_APP)
    try:
        stack = Stack(
            base / "firmware-store", apps=apps, app_env={"TWINFLEET_FIRMWARE_MAX_ARTIFACT_BYTES": str(8 << 30)}
        )
        stack.start()
        try:
            figures = asyncio.run(store_figures(stack, data, floor_file, device_counts, upload_mib, repeats))
        finally:
            stack.stop()
        proxied = Stack(base / "firmware-proxied", apps=apps, artifact_store="binding")
        proxied.start()
        try:
            figures.downloads += asyncio.run(proxied_figures(proxied, data, floor_file, proxied_devices, repeats))
        finally:
            proxied.stop()
    finally:
        floor_file.unlink(missing_ok=True)
    return figures

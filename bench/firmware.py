"""Firmware download figures: one artifact fetched by N devices at once through the firmware app,
next to a raw floor measured in the same run.

- Upload: one random artifact streamed in (an async generator body, 1 MiB pieces), MB/s.
- Download: a pre-signed URL minted per device, then all N devices download the artifact at once
  (one connection each, the body streamed and hashed with SHA-256, checked against the
  artifact's); aggregate MB/s over the whole run and p50/p99 seconds per download. Meanwhile the
  resident memory (VmRSS) of the firmware app and of its daprd is sampled every 50 ms.
- Floor: the same bytes read from a file on disk by N concurrent readers (threads, 1 MiB blocks,
  SHA-256): what reading and hashing cost without HTTP, Dapr or the storage binding. The file was
  just written, so it is most likely read from the page cache.

MB = 10^6 bytes; RSS in MiB. Everything on 127.0.0.1.
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
from pathlib import Path

import httpx

from services.devtools.stack import Stack
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP, TWIN_STORE_APP

MB = 1_000_000
MIB = 1 << 20
BLOCK = 1 << 20
"""Bytes per upload piece and per floor read."""
MAX_DEVICES = 1000
MAX_SIZE_MIB = 256
DOWNLOAD_TIMEOUT = 300.0
"""Seconds the whole concurrent download may take before the bench gives up on it."""
SAMPLE_EVERY = 0.05
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


@dataclass
class FirmwareFigures:
    size: int
    devices: int
    upload_mb_s: float
    download_mb_s: float
    p50_s: float
    p99_s: float
    floor_mb_s: float
    app_rss_before_mib: float
    app_rss_peak_mib: float
    daprd_rss_before_mib: float
    daprd_rss_peak_mib: float
    samples: int
    verified: int
    failures: dict[str, int] = field(default_factory=dict)
    """What went wrong with the downloads that did not verify: `HTTP 429`, `sha256 mismatch`, …"""
    first_failure: str = ""


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


async def upload(client: httpx.AsyncClient, data: bytes) -> tuple[str, float]:
    """Stream `data` in as one artifact; (its id, MB/s)."""

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), BLOCK):
            yield data[start : start + BLOCK]

    started = time.perf_counter()
    answer = await client.post(
        "/v1/artifacts", params={"name": "bench-fw", "version": "1.0.0"}, content=body(), timeout=120
    )
    elapsed = time.perf_counter() - started
    if answer.status_code != 201:
        raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
    stored = answer.json()
    if stored["length"] != len(data) or stored["sha256"] != hashlib.sha256(data).hexdigest():
        raise RuntimeError(f"upload stored something else: {stored}")
    return str(stored["id"]), len(data) / elapsed / MB


async def mint_urls(client: httpx.AsyncClient, artifact_id: str, devices: int, base: str) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with limit:
            answer = await client.post(
                f"/v1/artifacts/{artifact_id}/urls", json={"deviceId": f"bench-{i:04d}", "ttl": 3600}
            )
        if answer.status_code != 200:
            raise RuntimeError(f"minting a URL answered {answer.status_code}: {answer.text[:300]}")
        url = str(answer.json()["url"])
        if not url.startswith(base + "/"):
            raise RuntimeError(f"minted URL {url} is not on the bench's firmware app {base}")
        return url

    return list(await asyncio.gather(*(one(i) for i in range(devices))))


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
        outcomes = await asyncio.wait_for(asyncio.gather(*(one(u) for u in urls)), DOWNLOAD_TIMEOUT)
        return time.perf_counter() - started, list(outcomes)


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


async def suite_figures(stack: Stack, data: bytes, devices: int) -> FirmwareFigures:
    base = stack.direct_url(FIRMWARE_APP)  # where devices download (minted URLs point there)
    app_pid = stack.procs[FIRMWARE_APP].pid
    daprd_pid = stack.procs[f"{FIRMWARE_APP}-daprd"].pid
    assert app_pid is not None and daprd_pid is not None
    expected = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(
        base_url=stack.app_url(FIRMWARE_APP), headers=stack.headers, timeout=HTTP_TIMEOUT
    ) as client:
        artifact_id, upload_mb_s = await upload(client, data)
        urls = await mint_urls(client, artifact_id, devices, base)
    await asyncio.sleep(0.5)
    app_before, daprd_before = rss_mib(app_pid), rss_mib(daprd_pid)
    with RssSampler({"app": app_pid, "daprd": daprd_pid}) as sampler:
        wall, outcomes = await download_all(urls, expected, len(data))
    good = [o.seconds for o in outcomes if not o.error]
    failed = [o for o in outcomes if o.error]
    return FirmwareFigures(
        size=len(data),
        devices=devices,
        upload_mb_s=upload_mb_s,
        download_mb_s=len(good) * len(data) / wall / MB,
        p50_s=quantile(good, 50),
        p99_s=quantile(good, 99),
        floor_mb_s=0.0,
        app_rss_before_mib=app_before,
        app_rss_peak_mib=sampler.peaks["app"],
        daprd_rss_before_mib=daprd_before,
        daprd_rss_peak_mib=sampler.peaks["daprd"],
        samples=sampler.samples,
        verified=len(good),
        failures=dict(Counter(o.error for o in failed)),
        first_failure=f"{failed[0].error}: {failed[0].detail}" if failed else "",
    )


def measure_firmware(base: Path, size_mib: float = 8, devices: int = 100) -> FirmwareFigures:
    """The download figures through a stack of twin-store, rollout and firmware, then the floor."""
    if not 1 <= devices <= MAX_DEVICES:
        raise ValueError(f"devices must be 1..{MAX_DEVICES}, not {devices}")
    if not 0 < size_mib <= MAX_SIZE_MIB:
        raise ValueError(f"artifact size must be in (0, {MAX_SIZE_MIB}] MiB, not {size_mib}")
    data = os.urandom(int(size_mib * MIB))
    stack = Stack(base / "firmware", apps=(TWIN_STORE_APP, ROLLOUT_APP, FIRMWARE_APP))
    stack.start()
    try:
        figures = asyncio.run(suite_figures(stack, data, devices))
    finally:
        stack.stop()
    artifact = base / "firmware" / "floor-artifact.bin"
    artifact.write_bytes(data)
    try:
        figures.floor_mb_s = floor_read(artifact, devices, hashlib.sha256(data).hexdigest())
    finally:
        artifact.unlink()
    return figures

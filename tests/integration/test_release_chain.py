"""The release chain against a real firmware app (daprd, Redis, Azurite): `twin firmware` signs and
publishes as a release manager would, and the device's TUF client (`device_agent.trust`, the code
the agent runs before any install) decides what it may install, from the root it was provisioned
with. Attacks are played as an attacker would: with the suite's online keys and write access to
its state store, or as a mirror in the middle serving recorded metadata.

Tests run in file order on one stack: rotations change the chain for the tests after them.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import FetcherInterface, Urllib3Fetcher

from services.device_agent.trust import TrustedReleases
from services.devtools.stack import Stack
from services.domain.software import repository as rules
from services.domain.software.release import Refusal, UpdateRefused
from services.platform.names import FIRMWARE_APP
from tests.support.cli import twin_cli

TIMESTAMP_TTL = 6
STACK_ENV = {
    # A short-lived timestamp (re-signed every half of it) so a frozen one expires within the test.
    "TWINFLEET_FIRMWARE_TIMESTAMP_TTL": str(TIMESTAMP_TTL),
    "TWINFLEET_FIRMWARE_METADATA_REFRESH": "0.5",
}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def metadata_url(stack: Stack) -> str:
    return f"{stack.direct_url(FIRMWARE_APP)}/v1/metadata/"


def device(stack: Stack, metadata_url: str, name: str, fetcher: FetcherInterface | None = None) -> TrustedReleases:
    """A device's TUF client: provisioned with the first root, its own metadata directory."""
    return TrustedReleases(metadata_url, stack.trusted_root.read_bytes(), stack.run_dir / "devices" / name, fetcher)


def cli(stack: Stack, *args: str) -> str:
    done = twin_cli(stack, "firmware", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cli_refused(stack: Stack, *args: str) -> str:
    done = twin_cli(stack, "firmware", *args)
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def key(stack: Stack, name: str) -> str:
    return str(stack.release_team.directory / f"{name}.pem")


def key_id(stack: Stack, name: str) -> str:
    return rules.pem_signer(Path(key(stack, name)).read_bytes()).public_key.keyid


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def artifact_file(stack: Stack, name: str, size: int = 300_000) -> Path:
    path = stack.run_dir / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def release(stack: Stack, name: str, version: str, *keys: str) -> str:
    """Sign and upload a release with the CLI; its artifact id."""
    path = artifact_file(stack, f"{name}-{version}.img")
    signing = [arg for k in keys for arg in ("--key", key(stack, k))]
    cli(stack, "sign", str(path), "--name", name, "--version", version, *signing, "--root", str(stack.trusted_root))
    cli(stack, "upload", str(path), "--targets", f"{path}.targets.json")
    return f"{name}-{version}"


async def refusal(trust: TrustedReleases, artifact: str) -> UpdateRefused:
    with pytest.raises(UpdateRefused) as caught:
        await trust.release(artifact)
    return caught.value


async def test_a_release_signed_offline_is_published_and_verified(
    stack: Stack, firmware: httpx.AsyncClient, metadata_url: str
) -> None:
    keys = cli(stack, "keys")
    assert "root v1" in keys and "targets v0" in keys
    path = artifact_file(stack, "gateway.img")
    signed = cli(stack, "sign", str(path), "--name", "gateway", "--version", "1.0.0", "--key", key(stack, "targets-1"))
    assert "targets v1 (gateway-1.0.0) signed by 1 key(s)" in signed
    # bytes alone are stored, not released: no signed targets lists them yet
    cli(stack, "upload", str(path), "--name", "gateway", "--version", "1.0.0")
    assert (await firmware.get("/v1/artifacts/gateway-1.0.0")).json()["released"] is False
    assert (await refusal(device(stack, metadata_url, "early"), "gateway-1.0.0")).refusal is Refusal.UNAVAILABLE
    published = await firmware.post("/v1/metadata/targets", content=read(f"{path}.targets.json"))
    assert published.status_code == 201, published.text
    view = (await firmware.get("/v1/artifacts/gateway-1.0.0")).json()
    assert view["released"] is True and view["custom"] == {"name": "gateway", "version": "1.0.0"}
    got = await device(stack, metadata_url, "first").release("gateway-1.0.0")
    assert (got.version, got.length, got.sha256) == ("1.0.0", view["length"], view["sha256"])
    # a second release on top, through `upload --targets`: the first stays listed
    second = release(stack, "gateway", "1.1.0", "targets-1")
    listing = cli(stack, "list")
    assert "gateway-1.0.0" in listing and second in listing
    assert (await device(stack, metadata_url, "first").release(second)).version == "1.1.0"
    assert (await refusal(device(stack, metadata_url, "first"), "nothing-1.0")).refusal is Refusal.UNKNOWN


async def test_the_suite_refuses_targets_that_do_not_describe_stored_bytes(
    stack: Stack, firmware: httpx.AsyncClient
) -> None:
    path = artifact_file(stack, "lying.img")
    cli(stack, "sign", str(path), "--name", "lying", "--version", "1.0.0", "--key", key(stack, "targets-1"))
    path.write_bytes(os.urandom(300_000))  # other bytes than the ones signed
    refused = cli_refused(stack, "upload", str(path), "--targets", f"{path}.targets.json", "--id", "lying-1.0.0")
    assert "does not describe the stored bytes" in refused
    assert (await firmware.get("/v1/artifacts/lying-1.0.0")).json()["released"] is False
    # and a targets version that is not newer than the current one is a 409
    stale = await firmware.get("/v1/metadata/1.targets.json")
    assert (await firmware.post("/v1/metadata/targets", content=stale.content)).status_code == 409


async def _store_write(stack: Stack, key: str, value: Any) -> None:
    """Write a state store entry as the firmware app's daprd does (an attacker with store access)."""
    client = redis.Redis(port=stack.redis_port)
    try:
        await client.hset(f"{FIRMWARE_APP}||{key}", mapping={"data": json.dumps(value), "version": "999"})  # type: ignore[misc]
    finally:
        await client.aclose()


async def _store_read(stack: Stack, key: str) -> Any:
    client = redis.Redis(port=stack.redis_port)
    try:
        return json.loads(await client.hget(f"{FIRMWARE_APP}||{key}", "data"))  # type: ignore[misc]
    finally:
        await client.aclose()


async def test_a_compromised_online_key_alone_cannot_ship_a_release(
    stack: Stack, firmware: httpx.AsyncClient, metadata_url: str
) -> None:
    online = {role: rules.seed_signer(seed) for role, seed in stack.online_seeds.items()}
    path = artifact_file(stack, "evil.img")
    data = path.read_bytes()
    upload = await firmware.post("/v1/artifacts", params={"name": "evil", "version": "9.0.0"}, content=data)
    assert upload.status_code == 201
    head = await _store_read(stack, "tuf~head")
    current: Metadata[Targets] = Metadata.from_dict(
        (await _store_read(stack, f"tuf~targets~{head['targets']}"))["metadata"]
    )
    stored = upload.json()
    evil = rules.targets_with(
        current.signed,
        "evil-9.0.0",
        stored["length"],
        stored["sha256"],
        {"version": "9.0.0"},
        datetime.now(UTC) + timedelta(days=1),
    )
    rules.signed_by(evil, [online["snapshot"], online["timestamp"]])  # every key the suite holds
    # the suite itself refuses it ...
    answer = await firmware.post("/v1/metadata/targets", content=evil.to_bytes())
    assert answer.status_code == 400 and "not signed by the release manager" in answer.json()["message"]
    # ... so the attacker writes it into the store, with snapshot and timestamp signed by the online keys
    version = evil.signed.version
    await _store_write(stack, f"tuf~targets~{version}", {"metadata": evil.to_dict()})
    snapshot_version = max(int(v) for v in head["snapshots"]) + 100
    later = datetime.now(UTC) + timedelta(hours=1)
    snapshot = rules.snapshot_for(snapshot_version, version, later, online["snapshot"])
    timestamp = rules.timestamp_for(10_000, snapshot_version, later, online["timestamp"])
    forged = {
        **head,
        "targets": version,
        "snapshots": {str(snapshot_version): snapshot.to_dict()},
        "timestamp": timestamp.to_dict(),
    }
    await _store_write(stack, "tuf~head", forged)
    try:
        refused = await refusal(device(stack, metadata_url, "victim"), "evil-9.0.0")
        assert refused.refusal is Refusal.SIGNATURE and "targets" in refused.reason
    finally:
        await _store_write(stack, "tuf~head", head)  # put the suite back for the tests after this one
        client = redis.Redis(port=stack.redis_port)
        await client.delete(f"{FIRMWARE_APP}||tuf~targets~{version}")
        await client.aclose()
        assert (await firmware.delete("/v1/artifacts/evil-9.0.0")).status_code == 204


class Mirror(FetcherInterface):
    """A mirror in the middle: fetches from the firmware app, except the files it was told to
    answer with recorded bytes (an attacker replaying old metadata; it holds no key)."""

    def __init__(self) -> None:
        self.upstream = Urllib3Fetcher()
        self.replay: dict[str, bytes] = {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        if name in self.replay:
            return iter([self.replay[name]])
        return self.upstream._fetch(url)


def fetch(url: str) -> bytes:
    return httpx.get(url, timeout=10).raise_for_status().content


async def test_an_expired_timestamp_is_refused_freeze_attack(stack: Stack, metadata_url: str) -> None:
    frozen = fetch(metadata_url + "timestamp.json")
    frozen_snapshot_version = Metadata.from_bytes(frozen).signed.snapshot_meta.version
    snapshot = fetch(metadata_url + f"{frozen_snapshot_version}.snapshot.json")
    await asyncio.sleep(TIMESTAMP_TTL + 0.5)
    mirror = Mirror()
    mirror.replay = {"timestamp.json": frozen, f"{frozen_snapshot_version}.snapshot.json": snapshot}
    refused = await refusal(device(stack, metadata_url, "frozen", mirror), "gateway-1.0.0")
    assert refused.refusal is Refusal.EXPIRED and "timestamp" in refused.reason
    # the suite itself keeps re-signing: a device that reaches it gets fresh metadata
    assert (await device(stack, metadata_url, "thawed").release("gateway-1.0.0")).version == "1.0.0"
    # and one that saw the fresh timestamp refuses an older, still valid one (rollback)
    older = fetch(metadata_url + "timestamp.json")
    await asyncio.sleep(TIMESTAMP_TTL / 2 + 0.5)  # re-signed meanwhile
    assert (
        Metadata.from_bytes(fetch(metadata_url + "timestamp.json")).signed.version
        > Metadata.from_bytes(older).signed.version
    )
    seen = device(stack, metadata_url, "thawed")
    assert (await seen.release("gateway-1.0.0")).version == "1.0.0"
    mirror.replay = {"timestamp.json": older}
    replayed = await refusal(device(stack, metadata_url, "thawed", mirror), "gateway-1.0.0")
    assert replayed.refusal is Refusal.ROLLBACK, replayed.reason


async def test_mix_and_match_old_snapshot_new_targets_is_refused(stack: Stack, metadata_url: str) -> None:
    old_timestamp = fetch(metadata_url + "timestamp.json")
    old_snapshot_version = Metadata.from_bytes(old_timestamp).signed.snapshot_meta.version
    old_snapshot = fetch(metadata_url + f"{old_snapshot_version}.snapshot.json")
    old_targets_version = Metadata.from_bytes(old_snapshot).signed.meta["targets.json"].version
    newest = release(stack, "mix", "1.0.0", "targets-1")
    new_targets = fetch(metadata_url + "targets.json")
    assert Metadata.from_bytes(new_targets).signed.version == old_targets_version + 1
    # The mirror serves the old snapshot and, in place of the targets it names, the new targets.
    # It even holds the online timestamp key (so the short-lived timestamp cannot simply expire
    # meanwhile): a fresh timestamp naming the old snapshot.
    signer = rules.seed_signer(stack.online_seeds["timestamp"])
    timestamp = rules.timestamp_for(10_000, old_snapshot_version, datetime.now(UTC) + timedelta(hours=1), signer)
    mirror = Mirror()
    mirror.replay = {
        "timestamp.json": timestamp.to_bytes(),
        f"{old_snapshot_version}.snapshot.json": old_snapshot,
        f"{old_targets_version}.targets.json": new_targets,
    }
    refused = await refusal(device(stack, metadata_url, "mixed", mirror), newest)
    assert refused.refusal is Refusal.ROLLBACK and f"Expected targets v{old_targets_version}" in refused.reason
    assert (await device(stack, metadata_url, "honest").release(newest)).version == "1.0.0"


async def test_a_targets_key_below_threshold_is_refused(
    stack: Stack, firmware: httpx.AsyncClient, metadata_url: str
) -> None:
    new_key = stack.release_team.directory / "targets-2.pem"
    cli(stack, "keys", "--new", str(new_key))
    rotated = cli(
        stack, "rotate", "--key", key(stack, "root-1"), "--key", key(stack, "root-2"),
        "--add", f"targets={new_key.with_suffix('.pub.pem')}", "--threshold", "targets=2",
    )  # fmt: skip
    assert "root v2 published" in rotated
    path = artifact_file(stack, "two.img")
    cli(stack, "sign", str(path), "--name", "two", "--version", "1.0.0", "--key", key(stack, "targets-1"))
    refused = cli_refused(stack, "upload", str(path), "--targets", f"{path}.targets.json")
    assert "1 of the 2 targets signature(s) required verified" in refused
    # forced into the store anyway, the device refuses it too
    one_signature = read(f"{path}.targets.json")
    version = Metadata.from_bytes(one_signature).signed.version
    head = await _store_read(stack, "tuf~head")
    await _store_write(stack, f"tuf~targets~{version}", {"metadata": json.loads(one_signature)})
    await _store_write(stack, "tuf~head", {**head, "targets": version})
    await asyncio.sleep(1.2)  # the suite re-signs snapshot and timestamp over the forged head
    try:
        forged = await refusal(device(stack, metadata_url, "strict"), "two-1.0.0")
        assert forged.refusal is Refusal.SIGNATURE, forged.reason
    finally:
        await _store_write(stack, "tuf~head", head)
        client = redis.Redis(port=stack.redis_port)
        await client.delete(f"{FIRMWARE_APP}||tuf~targets~{version}")
        await client.aclose()
    # with both release managers' signatures it goes through
    cli(
        stack,
        "sign",
        str(path),
        "--name",
        "two",
        "--version",
        "1.0.0",
        "--key",
        key(stack, "targets-1"),
        "--key",
        str(new_key),
    )
    cli(stack, "upload", str(path), "--targets", f"{path}.targets.json", "--id", "two-1.0.0")
    assert (await device(stack, metadata_url, "strict").release("two-1.0.0")).version == "1.0.0"


async def test_an_agent_offline_during_rotations_follows_them(
    stack: Stack, firmware: httpx.AsyncClient, metadata_url: str
) -> None:
    # a device that last looked at root v2 (the test before) goes offline ...
    offline = device(stack, metadata_url, "offline")
    assert (await offline.release("gateway-1.0.0")).version == "1.0.0"
    old_target_key, new_target_key = key_id(stack, "targets-1"), key_id(stack, "targets-2")
    root_4 = stack.release_team.directory / "root-4.pem"
    cli(stack, "keys", "--new", str(root_4))
    # ... while the release team rotates twice: targets-1 out (threshold 1 again), then root-1 out and root-4 in
    cli(stack, "rotate", "--key", key(stack, "root-2"), "--key", key(stack, "root-3"),
        "--remove", f"targets={old_target_key}", "--threshold", "targets=1")  # fmt: skip
    root_1 = key_id(stack, "root-1")
    cli(stack, "rotate", "--key", key(stack, "root-2"), "--key", key(stack, "root-3"), "--key", str(root_4),
        "--remove", f"root={root_1}", "--add", f"root={root_4}")  # fmt: skip
    assert "root v4" in cli(stack, "keys") and new_target_key in cli(stack, "keys")
    fresh = release(stack, "gateway", "2.0.0", "targets-2")
    # the old targets key alone no longer ships anything
    path = artifact_file(stack, "old-key.img")
    cli(stack, "sign", str(path), "--name", "old", "--version", "1.0.0", "--key", key(stack, "targets-1"))
    assert "0 of the 1 targets signature(s)" in cli_refused(
        stack, "upload", str(path), "--targets", f"{path}.targets.json"
    )
    # the device comes back: from the root it knows (v2) it follows v3 and v4, then installs
    assert (await offline.release(fresh)).version == "2.0.0"
    history = sorted(p.name for p in (stack.run_dir / "devices" / "offline" / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json", "4.root.json"]
    # as does a device provisioned with root v1 that never saw any rotation
    assert (await device(stack, metadata_url, "never-online").release(fresh)).version == "2.0.0"
    # a rotation not signed by the current root's threshold is refused
    refused = cli_refused(stack, "rotate", "--key", key(stack, "root-1"), "--key", key(stack, "root-2"))
    assert "not signed by the current root's keys" in refused


async def test_deleting_a_release_signs_it_out_first(
    stack: Stack, firmware: httpx.AsyncClient, metadata_url: str
) -> None:
    assert (await firmware.delete("/v1/artifacts/gateway-1.1.0")).status_code == 409
    assert "give --key" in cli_refused(stack, "delete", "gateway-1.1.0")
    cli(stack, "delete", "gateway-1.1.0", "--key", key(stack, "targets-2"))
    assert (await firmware.get("/v1/artifacts/gateway-1.1.0")).status_code == 404
    gone = await refusal(device(stack, metadata_url, "after-delete"), "gateway-1.1.0")
    assert gone.refusal is Refusal.UNKNOWN

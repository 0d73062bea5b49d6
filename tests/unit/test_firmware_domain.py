"""The release repository's rules (TUF roles), device-side release checks, download grants and byte
ranges: the pure parts of software updates."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from services.domain.errors import ErrorCode, TwinError
from services.domain.software import repository as rules
from services.domain.software.grants import (
    Grant,
    check_credential,
    check_device,
    check_presigned,
    device_password,
    mint_credential,
    presign,
)
from services.domain.software.ranges import ByteRange, chunk_spans, parse_range
from services.domain.software.release import Refusal, UpdateRefused, check_download, check_offer, release_of
from services.domain.software.twin_key import delta_artifact, references, satisfied, with_download_url

NOW = datetime(2027, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
EPOCH = 1_800_000_000.0


def signer(n: int) -> CryptoSigner:
    return CryptoSigner(Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32))


ROOT = [signer(1), signer(2), signer(3)]
TARGETS = [signer(4), signer(5)]
ONLINE = {"snapshot": signer(6), "timestamp": signer(7)}
ONLINE_KEYS = {role: s.public_key for role, s in ONLINE.items()}


def first_root(targets_threshold: int = 1) -> Metadata[Root]:
    keys = {
        "root": [s.public_key for s in ROOT],
        "targets": [s.public_key for s in TARGETS],
        "snapshot": [ONLINE_KEYS["snapshot"]],
        "timestamp": [ONLINE_KEYS["timestamp"]],
    }
    thresholds = {"root": 2, "targets": targets_threshold, "snapshot": 1, "timestamp": 1}
    return rules.new_root(keys, thresholds, LATER)


def refused(call: object, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(TwinError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code is code and fragment in caught.value.message, caught.value.message


def test_the_first_root_needs_its_own_threshold_and_the_suites_online_keys() -> None:
    root = first_root()
    refused(lambda: rules.check_root(root, None, ONLINE_KEYS, NOW), ErrorCode.BAD_REQUEST, "0 of the 2 root")
    rules.signed_by(root, ROOT[:1])
    refused(lambda: rules.check_root(root, None, ONLINE_KEYS, NOW), ErrorCode.BAD_REQUEST, "1 of the 2 root")
    rules.signed_by(root, ROOT[1:2])
    rules.check_root(root, None, ONLINE_KEYS, NOW)
    other_online = {**ONLINE_KEYS, "timestamp": signer(9).public_key}
    refused(lambda: rules.check_root(root, None, other_online, NOW), ErrorCode.BAD_REQUEST, "online timestamp key")
    refused(lambda: rules.check_root(root, None, ONLINE_KEYS, LATER + timedelta(1)), ErrorCode.BAD_REQUEST, "expired")


def test_a_rotation_needs_the_old_threshold_and_its_own() -> None:
    old = rules.signed_by(first_root(), ROOT[:2]).signed
    new_key = signer(8)
    change = {"root": rules.RootChange(add=[new_key.public_key], remove=[ROOT[0].public_key.keyid])}
    rotated = rules.rotated(old, change, LATER)
    assert rotated.signed.version == 2 and ROOT[0].public_key.keyid not in rotated.signed.roles["root"].keyids
    rules.signed_by(rotated, [ROOT[0], new_key])  # 1 of the old threshold (root-2, root-3 missing)
    refused(lambda: rules.check_root(rotated, old, ONLINE_KEYS, NOW), ErrorCode.BAD_REQUEST, "current root's keys")
    rules.signed_by(rotated, [ROOT[1]])  # now 2 old ones (1, 2) and 2 new ones (2, 8)
    rules.check_root(rotated, old, ONLINE_KEYS, NOW)
    again = rules.rotated(old, {}, LATER)
    again.signed.version = 1
    refused(lambda: rules.check_root(again, old, ONLINE_KEYS, NOW), ErrorCode.CONFLICT, "not newer")
    refused(
        lambda: rules.rotated(old, {"targets": rules.RootChange(threshold=3)}, LATER),
        ErrorCode.BAD_REQUEST,
        "threshold 3",
    )
    refused(lambda: rules.rotated(old, {"bogus": rules.RootChange()}, LATER), ErrorCode.BAD_REQUEST, "unknown role")


def test_targets_are_accepted_only_signed_to_threshold_newer_and_describing_stored_bytes() -> None:
    root = first_root(targets_threshold=2).signed
    sha = hashlib.sha256(b"firmware").hexdigest()
    stored = {"fw-2.0.0": rules.StoredBytes(8, sha)}
    targets = rules.targets_with(None, "fw-2.0.0", 8, sha, {"version": "2.0.0"}, LATER)
    rules.signed_by(targets, [TARGETS[0], ONLINE["snapshot"], ONLINE["timestamp"]])  # online keys count for nothing
    refused(lambda: rules.check_targets(root, targets, 0, stored, NOW), ErrorCode.BAD_REQUEST, "1 of the 2 targets")
    rules.signed_by(targets, [TARGETS[1]])
    rules.check_targets(root, targets, 0, stored, NOW)
    refused(lambda: rules.check_targets(root, targets, 1, stored, NOW), ErrorCode.CONFLICT, "not newer")
    other = {"fw-2.0.0": rules.StoredBytes(8, "0" * 64)}
    refused(lambda: rules.check_targets(root, targets, 0, other, NOW), ErrorCode.BAD_REQUEST, "stored bytes")
    refused(lambda: rules.check_targets(root, targets, 0, {}, NOW), ErrorCode.BAD_REQUEST, "upload its bytes first")
    tampered = rules.load(targets.to_bytes(), "targets")
    tampered.signed.targets["fw-2.0.0"].length = 9
    refused(lambda: rules.check_targets(root, tampered, 0, stored, NOW), ErrorCode.BAD_REQUEST, "0 of the 2")
    nxt = rules.targets_without(targets.signed, "fw-2.0.0", LATER)
    assert nxt.signed.version == 2 and not nxt.signed.targets and not nxt.signatures


def test_snapshot_and_timestamp_are_the_online_keys_and_renewed_at_half_life() -> None:
    root = first_root().signed
    snapshot = rules.snapshot_for(3, 7, LATER, ONLINE["snapshot"])
    timestamp = rules.timestamp_for(5, 3, LATER, ONLINE["timestamp"])
    assert rules.verification(root, "snapshot", snapshot).ok and rules.verification(root, "timestamp", timestamp).ok
    assert not rules.verification(root, "timestamp", snapshot).ok
    assert snapshot.signed.meta["targets.json"].version == 7 and timestamp.signed.snapshot_meta.version == 3
    day = timedelta(days=1)
    assert not rules.due(NOW + day, NOW + timedelta(hours=11), day)
    assert rules.due(NOW + day, NOW + timedelta(hours=13), day)
    refused(lambda: rules.load(b"{", "root"), ErrorCode.BAD_REQUEST, "not TUF metadata")
    refused(lambda: rules.load(snapshot.to_bytes(), "root"), ErrorCode.BAD_REQUEST, "expected root")


def test_pem_keys_round_trip() -> None:
    pem = rules.new_private_pem()
    own = rules.pem_signer(pem)
    assert rules.pem_public_key(rules.public_pem(own)).keyid == own.public_key.keyid == rules.pem_public_key(pem).keyid
    refused(lambda: rules.pem_signer(b"nonsense"), ErrorCode.BAD_REQUEST, "PEM")


def refusal(call: object) -> Refusal:
    with pytest.raises(UpdateRefused) as caught:
        call()  # type: ignore[operator]
    return caught.value.refusal


def test_rollback_other_artifact_and_wrong_bytes_are_refused() -> None:
    sha = hashlib.sha256(b"firmware").hexdigest()
    release = release_of("fw-1.2.0", 8, {"sha256": sha}, {"version": "1.2.0", "name": "fw"})
    assert refusal(lambda: check_offer(release, "fw-1.2.0", installed="1.10.0")) is Refusal.ROLLBACK
    assert refusal(lambda: check_offer(release, "fw-9", installed=None)) is Refusal.MISMATCH
    check_offer(release, "fw-1.2.0", installed="1.2.0")  # the same version again is no rollback
    assert refusal(lambda: check_download(release, 7, release.sha256)) is Refusal.LENGTH
    assert refusal(lambda: check_download(release, 8, "0" * 64)) is Refusal.HASH
    check_download(release, 8, sha)
    assert refusal(lambda: release_of("x", 1, {"sha512": "a"}, {"version": "1"})) is Refusal.MALFORMED
    assert refusal(lambda: release_of("x", 1, {"sha256": "a"}, {})) is Refusal.MALFORMED


def test_presigned_urls_are_bound_to_device_artifact_time_and_address() -> None:
    grant = Grant("dev-a", "fw-2.0.0", int(EPOCH) + 60, "10.0.0.7")
    params = presign(b"k", grant)
    assert check_presigned(b"k", "fw-2.0.0", params, "10.0.0.7", EPOCH) == grant
    cases = [
        (b"k", "fw-2.0.0", {**params, "device": "dev-b"}, "10.0.0.7", EPOCH, "signature"),
        (b"k", "fw-other", params, "10.0.0.7", EPOCH, "signature"),
        (b"other", "fw-2.0.0", params, "10.0.0.7", EPOCH, "signature"),
        (b"k", "fw-2.0.0", {**params, "ip": ""}, "10.0.0.8", EPOCH, "signature"),
        (b"k", "fw-2.0.0", params, "10.0.0.8", EPOCH, "another address"),
        (b"k", "fw-2.0.0", params, "10.0.0.7", EPOCH + 61, "expired"),
        (b"k", "fw-2.0.0", {"device": "dev-a"}, "10.0.0.7", EPOCH, "needs"),
    ]
    for key, artifact, query, ip, now, why in cases:
        with pytest.raises(TwinError) as caught:
            check_presigned(key, artifact, query, ip, now)
        assert caught.value.code is ErrorCode.FORBIDDEN and why in caught.value.message


def test_credentials_serve_only_their_device_and_artifact() -> None:
    token = mint_credential(b"k", Grant("dev-a", "fw-1", int(EPOCH) + 60))
    assert check_credential(b"k", token, "fw-1", "dev-a", EPOCH).device_id == "dev-a"
    for artifact, device, now, forged, why in [
        ("fw-1", "dev-b", EPOCH, token, "another device"),
        ("fw-2", "dev-a", EPOCH, token, "scoped"),
        ("fw-1", "dev-a", EPOCH + 61, token, "expired"),
        ("fw-1", "dev-a", EPOCH, token[:-1] + ("0" if token[-1] != "0" else "1"), "tampered"),
        ("fw-1", "dev-a", EPOCH, "garbage", "malformed"),
    ]:
        with pytest.raises(TwinError) as caught:
            check_credential(b"k", forged, artifact, device, now)
        assert why in caught.value.message
    # a URL signature is not a credential (purposes are part of what is signed)
    url_mac = presign(b"k", Grant("dev-a", "fw-1", int(EPOCH) + 60))["signature"]
    with pytest.raises(TwinError):
        check_credential(b"k", token.split(".")[0] + "." + url_mac, "fw-1", "dev-a", EPOCH)
    check_device("fleet", "dev-a", device_password("fleet", "dev-a"))
    with pytest.raises(TwinError):
        check_device("fleet", "dev-b", device_password("fleet", "dev-a"))


def test_ranges() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=10-19", 100) == ByteRange(10, 19)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-5", 100) == ByteRange(95, 99)
    assert parse_range("bytes=50-500", 100) == ByteRange(50, 99)
    assert parse_range("items=1-2", 100) is None  # not a byte range: ignored, whole body
    for bad in ("bytes=100-", "bytes=20-10", "bytes=0-1,5-6", "bytes=-0"):
        with pytest.raises(TwinError) as caught:
            parse_range(bad, 100)
        assert caught.value.code is ErrorCode.RANGE_NOT_SATISFIABLE


@given(st.integers(1, 5000), st.integers(1, 700), st.data())
def test_chunk_spans_cover_the_range_exactly(total: int, chunk: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, total - 1))
    end = data.draw(st.integers(start, total - 1))
    body = bytes(i % 251 for i in range(total))
    chunks = [body[i : i + chunk] for i in range(0, total, chunk)]
    out = b"".join(chunks[index][a:b] for index, a, b in chunk_spans(ByteRange(start, end), chunk))
    assert out == body[start : end + 1]


def test_software_contract() -> None:
    desired = {"artifact": "fw-2", "version": "2"}
    assert satisfied({"artifact": "fw-2", "version": "2", "status": "UPDATED"}, desired)
    assert satisfied({"artifact": "fw-1", "status": "FAILED", "attempt": "fw-2"}, desired)  # no retry loop
    assert not satisfied({"artifact": "fw-1", "status": "FAILED", "attempt": "fw-0"}, desired)
    assert not satisfied({"artifact": "fw-1", "status": "DOWNLOADING", "attempt": "fw-2"}, desired)
    assert references({"content": {"software": desired}, "rollback": {"software": {"artifact": "fw-1"}}}) == {
        "fw-1",
        "fw-2",
    }
    delta = {"state": {"software": desired, "config": {"a": 1}}, "version": 4}
    assert delta_artifact(delta) == "fw-2"
    bound = with_download_url(delta, "https://store/fw-2?sig")
    assert bound["state"]["software"]["url"] == "https://store/fw-2?sig"
    assert bound["state"]["config"] == {"a": 1} and "url" not in delta["state"]["software"]
    assert delta_artifact({"state": {"config": {"a": 1}}}) is None
    assert delta_artifact({"state": {"software": "fw-2"}}) is None

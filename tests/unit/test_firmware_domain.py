"""Signed release metadata, download grants and byte ranges: the pure parts of software updates."""

from __future__ import annotations

import copy
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from services.domain.errors import ErrorCode, TwinError
from services.domain.software.artifacts import Artifact, ArtifactStatus
from services.domain.software.grants import (
    Grant,
    check_credential,
    check_device,
    check_presigned,
    device_password,
    mint_credential,
    presign,
)
from services.domain.software.metadata import (
    Refusal,
    UpdateRefused,
    check_download,
    check_offer,
    key_id,
    sign,
    targets_for,
    verify_metadata,
)
from services.domain.software.ranges import ByteRange, chunk_spans, parse_range
from services.domain.software.twin_key import bind_download_url, references, satisfied

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = {key_id(KEY.public_key()): KEY.public_key()}


def release_metadata(version: str = "2.0.0", expires: float = NOW + 3600) -> dict:
    data = b"firmware"
    artifact = Artifact(
        id=f"fw-{version}",
        name="fw",
        version=version,
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created=NOW,
        status=ArtifactStatus.READY,
    )
    return sign(targets_for(artifact, expires), KEY)


def refusal(call: object) -> Refusal:
    with pytest.raises(UpdateRefused) as caught:
        call()  # type: ignore[operator]
    return caught.value.refusal


def test_signed_metadata_verifies_and_names_the_release() -> None:
    release = verify_metadata(release_metadata(), TRUSTED, NOW)
    assert (release.artifact, release.version, release.length) == ("fw-2.0.0", "2.0.0", 8)
    check_offer(release, "fw-2.0.0", installed="1.9.9")
    check_download(release, 8, hashlib.sha256(b"firmware").hexdigest())


def test_tampered_unsigned_foreign_or_expired_metadata_is_refused() -> None:
    metadata = release_metadata()
    tampered = copy.deepcopy(metadata)
    tampered["signed"]["targets"]["fw"]["length"] = 9
    assert refusal(lambda: verify_metadata(tampered, TRUSTED, NOW)) is Refusal.SIGNATURE
    other = Ed25519PrivateKey.generate()
    assert refusal(lambda: verify_metadata(metadata, {key_id(other.public_key()): other.public_key()}, NOW)) is (
        Refusal.SIGNATURE
    )
    unsigned = {**metadata, "signatures": []}
    assert refusal(lambda: verify_metadata(unsigned, TRUSTED, NOW)) is Refusal.SIGNATURE
    assert refusal(lambda: verify_metadata(release_metadata(expires=NOW - 1), TRUSTED, NOW)) is Refusal.EXPIRED
    assert refusal(lambda: verify_metadata({"signed": 1}, TRUSTED, NOW)) is Refusal.MALFORMED


def test_rollback_other_artifact_and_wrong_bytes_are_refused() -> None:
    release = verify_metadata(release_metadata("1.2.0"), TRUSTED, NOW)
    assert refusal(lambda: check_offer(release, "fw-1.2.0", installed="1.10.0")) is Refusal.ROLLBACK
    assert refusal(lambda: check_offer(release, "fw-9", installed=None)) is Refusal.MISMATCH
    check_offer(release, "fw-1.2.0", installed="1.2.0")  # the same version again is no rollback
    assert refusal(lambda: check_download(release, 7, release.sha256)) is Refusal.LENGTH
    assert refusal(lambda: check_download(release, 8, "0" * 64)) is Refusal.HASH


def test_presigned_urls_are_bound_to_device_artifact_time_and_address() -> None:
    grant = Grant("dev-a", "fw-2.0.0", int(NOW) + 60, "10.0.0.7")
    params = presign(b"k", grant)
    assert check_presigned(b"k", "fw-2.0.0", params, "10.0.0.7", NOW) == grant
    cases = [
        (b"k", "fw-2.0.0", {**params, "device": "dev-b"}, "10.0.0.7", NOW, "signature"),
        (b"k", "fw-other", params, "10.0.0.7", NOW, "signature"),
        (b"other", "fw-2.0.0", params, "10.0.0.7", NOW, "signature"),
        (b"k", "fw-2.0.0", {**params, "ip": ""}, "10.0.0.8", NOW, "signature"),
        (b"k", "fw-2.0.0", params, "10.0.0.8", NOW, "another address"),
        (b"k", "fw-2.0.0", params, "10.0.0.7", NOW + 61, "expired"),
        (b"k", "fw-2.0.0", {"device": "dev-a"}, "10.0.0.7", NOW, "needs"),
    ]
    for key, artifact, query, ip, now, why in cases:
        with pytest.raises(TwinError) as caught:
            check_presigned(key, artifact, query, ip, now)
        assert caught.value.code is ErrorCode.FORBIDDEN and why in caught.value.message


def test_credentials_serve_only_their_device_and_artifact() -> None:
    token = mint_credential(b"k", Grant("dev-a", "fw-1", int(NOW) + 60))
    assert check_credential(b"k", token, "fw-1", "dev-a", NOW).device_id == "dev-a"
    for artifact, device, now, forged, why in [
        ("fw-1", "dev-b", NOW, token, "another device"),
        ("fw-2", "dev-a", NOW, token, "scoped"),
        ("fw-1", "dev-a", NOW + 61, token, "expired"),
        ("fw-1", "dev-a", NOW, token[:-1] + ("0" if token[-1] != "0" else "1"), "tampered"),
        ("fw-1", "dev-a", NOW, "garbage", "malformed"),
    ]:
        with pytest.raises(TwinError) as caught:
            check_credential(b"k", forged, artifact, device, now)
        assert why in caught.value.message
    # a URL signature is not a credential (purposes are part of what is signed)
    url_mac = presign(b"k", Grant("dev-a", "fw-1", int(NOW) + 60))["signature"]
    with pytest.raises(TwinError):
        check_credential(b"k", token.split(".")[0] + "." + url_mac, "fw-1", "dev-a", NOW)
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
    bound = bind_download_url(delta, "dev-a", NOW, 60, lambda g: f"u/{g.device_id}/{g.artifact}/{g.expires}")
    assert bound["state"]["software"]["url"] == f"u/dev-a/fw-2/{int(NOW) + 60}"
    assert bound["state"]["config"] == {"a": 1} and "url" not in delta["state"]["software"]
    plain = {"state": {"config": {"a": 1}}}
    assert bind_download_url(plain, "dev-a", NOW, 60, lambda g: "x") is plain

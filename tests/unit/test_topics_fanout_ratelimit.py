from __future__ import annotations

import pytest

from services.contracts.events import DeltaRequested, TwinChanged
from services.contracts.topics import AWS, DEFAULT, Operation, Reply, TwinAddress, profile
from services.domain.twin.fanout import plan_fanout
from services.domain.twin.index import decode_cursor, encode_cursor, page_from_shard, with_member
from services.domain.twin.ratelimit import take_token


@pytest.mark.parametrize(
    ("prof", "topic", "expected"),
    [
        (DEFAULT, "dev1/state/update", (TwinAddress("dev1"), Operation.UPDATE)),
        (DEFAULT, "dev1/state/get", (TwinAddress("dev1"), Operation.GET)),
        (DEFAULT, "dev1/state/delete", (TwinAddress("dev1"), Operation.DELETE)),
        (DEFAULT, "dev1/state/update/accepted", None),
        (DEFAULT, "dev1/state/frob", None),
        (DEFAULT, "dev 1/state/update", None),
        (AWS, "$aws/things/t1/shadow/update", (TwinAddress("t1"), Operation.UPDATE)),
        (AWS, "$aws/things/t1/shadow/name/cfg/get", (TwinAddress("t1", "cfg"), Operation.GET)),
        (AWS, "$aws/things/t1/shadow/name/cfg/update/delta", None),
        (AWS, "$aws/things/t1/other/update", None),
        (AWS, "t1/state/update", None),
    ],
)
def test_parse_topics(prof, topic, expected) -> None:  # type: ignore[no-untyped-def]
    assert prof.parse(topic) == expected


def test_reply_topics_and_subscriptions() -> None:
    named = TwinAddress("t1", "cfg")
    assert AWS.reply_topic(named, Operation.UPDATE, Reply.DELTA) == "$aws/things/t1/shadow/name/cfg/update/delta"
    assert AWS.reply_topic(TwinAddress("t1"), Operation.GET, Reply.ACCEPTED) == "$aws/things/t1/shadow/get/accepted"
    assert DEFAULT.reply_topic(TwinAddress("d"), Operation.UPDATE, Reply.DOCUMENTS) == "d/state/update/documents"
    assert DEFAULT.subscriptions() == ["+/state/update", "+/state/get", "+/state/delete", "+/state/template"]
    assert "$aws/things/+/shadow/name/+/update" in AWS.subscriptions()
    assert DEFAULT.request_topic(TwinAddress("d"), Operation.GET) == "d/state/get"
    assert profile("aws") is AWS
    with pytest.raises(ValueError, match="unknown topic profile"):
        profile("nope")


def snap(version: int, desired: dict, reported: dict) -> dict:  # type: ignore[type-arg]
    return {
        "state": {"desired": desired, "reported": reported},
        "metadata": {"desired": {k: {"timestamp": version} for k in desired}},
        "version": version,
        "timestamp": version,
    }


def changed(version: int, previous: dict | None, current: dict | None, device: str = "d1") -> TwinChanged:  # type: ignore[type-arg]
    return TwinChanged(
        device_id=device, version=version, timestamp=version, cause="update", previous=previous, current=current
    )


def test_fanout_coalesces_a_burst_into_one_delta_and_one_documents() -> None:
    s1, s2, s3 = snap(1, {}, {}), snap(2, {"a": 1}, {}), snap(3, {"a": 2}, {})
    out, sent = plan_fanout([changed(2, s1, s2), changed(3, s2, s3)], {})
    assert len(out) == 1
    assert out[0].delta is not None and out[0].delta["state"] == {"a": 2} and out[0].delta["version"] == 3
    assert out[0].documents == {"previous": s1, "current": s3, "timestamp": 3}
    assert sent == {TwinAddress("d1"): 3}


def test_fanout_drops_stale_and_duplicate_events() -> None:
    s1, s2 = snap(1, {"a": 1}, {}), snap(2, {"a": 2}, {})
    out, _ = plan_fanout([changed(2, s1, s2)], {TwinAddress("d1"): 2})
    assert out == []


def test_fanout_skips_delta_when_unchanged_or_empty() -> None:
    s1, s2 = snap(1, {"a": 1}, {}), snap(2, {"a": 1}, {"b": 1})
    out, _ = plan_fanout([changed(2, s1, s2)], {})
    assert out[0].delta is None and out[0].documents is not None
    s3 = snap(3, {"a": 1}, {"a": 1})
    out, _ = plan_fanout([changed(3, s2, s3)], {})
    assert out[0].delta is None


def test_fanout_resends_full_delta_on_request() -> None:
    s = snap(4, {"a": 1}, {})
    req = DeltaRequested(device_id="d1", version=4, client_token="g", current=s)
    out, _ = plan_fanout([req], {TwinAddress("d1"): 4})
    assert out[0].delta is not None and out[0].delta["clientToken"] == "g" and out[0].documents is None


def test_fanout_keeps_twins_apart() -> None:
    out, sent = plan_fanout(
        [changed(1, None, snap(1, {"x": 1}, {}), "a"), changed(1, None, snap(1, {"x": 1}, {}), "b")], {}
    )
    assert [o.address.device_id for o in out] == ["a", "b"] and len(sent) == 2


def test_token_bucket() -> None:
    bucket = None
    allowed = []
    for _ in range(5):
        ok, bucket = take_token(bucket, 100.0, rate=1.0, burst=3)
        allowed.append(ok)
    assert allowed == [True, True, True, False, False]
    ok, bucket = take_token(bucket, 101.0, rate=1.0, burst=3)
    assert ok


def test_index_helpers() -> None:
    members = with_member(with_member(with_member([], "b", True), "a", True), "c", True)
    assert members == ["a", "b", "c"]
    assert with_member(members, "b", False) == ["a", "c"]
    assert with_member(members, "a", True) == members
    assert page_from_shard(members, "a", 5) == ["b", "c"]
    assert decode_cursor(encode_cursor(3, "x~y")) == (3, "x~y")
    with pytest.raises(ValueError):
        decode_cursor("99:x")

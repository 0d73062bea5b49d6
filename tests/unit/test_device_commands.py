"""Durable commands: request and result validation, the lifecycle's transitions, the per-device
index and due shards (table-driven + hypothesis), and the commands app's shell against an
in-memory store with ETags."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.commands.service import CommandService, Outcome
from services.commands.settings import CommandsSettings
from services.contracts.commands import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, CommandResultMessage, CommandStatus
from services.domain.commands.due import DueShard, due_shard
from services.domain.commands.index import CommandIndex, IndexEntry, index_key, resend_due, settle
from services.domain.commands.record import DeviceCommand, cancel, complete, deliver, expire, record_key, retention_ttl
from services.domain.commands.requests import (
    MAX_ARGS_BYTES,
    MAX_REASON_CHARS,
    MAX_RESULT_BYTES,
    CommandRequest,
    new_command,
    parse_request,
    parse_result,
    result_topic_command,
    same_request,
    sync_topic_device,
)
from services.domain.errors import ErrorCode, TwinError
from services.platform.sidecar import Stored, Write, WriteFailed

S = CommandStatus
T0 = 1_800_000_000.0
FINAL = (S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED)
OK = CommandResultMessage(status=S.SUCCEEDED, result={"pong": 1})
FAIL = CommandResultMessage(status=S.FAILED, reason="no such file")


def command(status: CommandStatus = S.QUEUED, ttl: float = 60, **changes: Any) -> DeviceCommand:
    base = DeviceCommand("c1", "dev-1", "ping", {"a": 1}, T0, T0 + ttl)
    if status is S.DELIVERED:
        base = replace(base, status=status, deliveries=1)
    elif not status.pending:
        base = replace(base, status=status, completed_at=T0 + 1)
    return replace(base, **changes)


def code_of(call: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(TwinError) as error:
        call(*args)
    return int(error.value.code), error.value.message


# -- requests --------------------------------------------------------------------------------------


def test_parse_request_takes_a_valid_request_and_fills_defaults() -> None:
    assert parse_request({"name": "reboot"}) == CommandRequest("reboot", {}, DEFAULT_TTL_SECONDS)
    parsed = parse_request({"name": "fw.update_2-b", "args": {"to": "1.2"}, "ttlSeconds": 1.5, "id": "job-7"})
    assert parsed == CommandRequest("fw.update_2-b", {"to": "1.2"}, 1.5, "job-7")
    assert parse_request({"name": "x" * 64, "args": None, "ttlSeconds": MAX_TTL_SECONDS}).args == {}
    assert parse_request({"name": "a", "args": {"b": "x" * (MAX_ARGS_BYTES - 10)}}).name == "a"


@pytest.mark.parametrize(
    ("body", "code", "names"),
    [
        ([], 400, "JSON object"),
        (None, 400, "JSON object"),
        ({}, 400, "name"),
        ({"name": ""}, 400, "name"),
        ({"name": "x" * 65}, 400, "name"),
        ({"name": "has space"}, 400, "name"),
        ({"name": "a/b"}, 400, "name"),
        ({"name": "a+"}, 400, "name"),
        ({"name": 5}, 400, "name"),
        ({"name": "a", "args": [1]}, 400, "args"),
        ({"name": "a", "args": "x"}, 400, "args"),
        ({"name": "a", "ttlSeconds": 0}, 400, "ttlSeconds"),
        ({"name": "a", "ttlSeconds": 0.5}, 400, "ttlSeconds"),
        ({"name": "a", "ttlSeconds": -5}, 400, "ttlSeconds"),
        ({"name": "a", "ttlSeconds": MAX_TTL_SECONDS + 1}, 400, "7 days"),
        ({"name": "a", "ttlSeconds": "60"}, 400, "ttlSeconds"),
        ({"name": "a", "ttlSeconds": True}, 400, "ttlSeconds"),
        ({"name": "a", "ttlSeconds": float("inf")}, 400, "ttlSeconds"),
        ({"name": "a", "id": "sync"}, 400, "id"),
        ({"name": "a", "id": "a/b"}, 400, "id"),
        ({"name": "a", "id": 7}, 400, "id"),
        ({"name": "a", "timeout": 5}, 400, "timeout"),
        ({"name": "a", "args": {"b": "x" * MAX_ARGS_BYTES}}, 413, "4096"),
    ],
)
def test_parse_request_refuses_bad_requests_naming_the_problem(body: Any, code: int, names: str) -> None:
    got_code, message = code_of(parse_request, body)
    assert got_code == code and names in message, message


def test_a_new_command_expires_ttl_after_creation_and_tells_the_device_so() -> None:
    made = new_command("dev-1", CommandRequest("ping", {"a": 1}, 30), "gen-id", T0)
    assert (made.id, made.status, made.deliveries, made.expires_at) == ("gen-id", S.QUEUED, 0, T0 + 30)
    assert made.message() == {"id": "gen-id", "name": "ping", "args": {"a": 1}, "expiresAt": T0 + 30}
    assert new_command("dev-1", CommandRequest("ping", {}, 30, "mine"), "gen-id", T0).id == "mine"
    assert same_request(made, CommandRequest("ping", {"a": 1.0}, 99))
    assert not same_request(made, CommandRequest("ping", {"a": True}, 30))
    assert not same_request(made, CommandRequest("pong", {"a": 1}, 30))


# -- results ---------------------------------------------------------------------------------------


def test_parse_result_takes_results_and_ignores_extra_fields() -> None:
    assert parse_result({"status": "SUCCEEDED", "result": {"x": 1}}) == CommandResultMessage(
        status=S.SUCCEEDED, result={"x": 1}
    )
    assert parse_result({"status": "FAILED", "reason": "boom", "at": 5}) == CommandResultMessage(
        status=S.FAILED, reason="boom"
    )
    assert parse_result({"status": "SUCCEEDED", "result": None}).result is None
    assert len(parse_result({"status": "FAILED", "reason": "r" * 5000}).reason or "") == MAX_REASON_CHARS


def test_an_oversized_result_is_kept_as_failed_saying_why() -> None:
    kept = parse_result({"status": "SUCCEEDED", "result": {"blob": "x" * MAX_RESULT_BYTES}})
    assert kept.status is S.FAILED and kept.result is None and str(MAX_RESULT_BYTES) in (kept.reason or "")


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "SUCCEEDED",
        {},
        {"status": "DONE"},
        {"status": "QUEUED"},
        {"status": "EXPIRED"},
        {"status": "SUCCEEDED", "result": [1]},
        {"status": "FAILED", "reason": 5},
    ],
)
def test_parse_result_refuses_malformed_results(payload: Any) -> None:
    assert code_of(parse_result, payload)[0] == 400


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("dev-1/commands/abc/result", ("dev-1", "abc")),
        ("dev-1/commands/sync/result", None),
        ("dev-1/commands/abc", None),
        ("dev-1/commands/abc/result/x", None),
        ("dev 1/commands/abc/result", None),
        ("dev-1/events/abc/result", None),
    ],
)
def test_result_topics(topic: str, expected: tuple[str, str] | None) -> None:
    assert result_topic_command(topic) == expected


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("dev-1/commands/sync", "dev-1"),
        ("dev-1/commands/abc", None),
        ("dev-1/commands/sync/x", None),
        ("/c/sync", None),
    ],
)
def test_sync_topics(topic: str, expected: str | None) -> None:
    assert sync_topic_device(topic) == expected


# -- transitions -----------------------------------------------------------------------------------

BEFORE, AFTER = T0 + 10, T0 + 60
"""A moment before the test command's expiry, and its expiry itself (due from then on)."""


@pytest.mark.parametrize(
    ("status", "now", "expected"),
    [
        (S.QUEUED, BEFORE, S.DELIVERED),
        (S.DELIVERED, BEFORE, S.DELIVERED),
        (S.QUEUED, AFTER, S.EXPIRED),
        (S.DELIVERED, AFTER, S.EXPIRED),
        *[(final, BEFORE, final) for final in FINAL],
    ],
)
def test_deliver(status: CommandStatus, now: float, expected: CommandStatus) -> None:
    before = command(status)
    after = deliver(before, now)
    assert after.status is expected
    assert after.deliveries == before.deliveries + (1 if expected is S.DELIVERED else 0)


@pytest.mark.parametrize(
    ("status", "now", "result", "expected"),
    [
        (S.QUEUED, BEFORE, OK, S.SUCCEEDED),
        (S.DELIVERED, BEFORE, OK, S.SUCCEEDED),
        (S.DELIVERED, BEFORE, FAIL, S.FAILED),
        (S.DELIVERED, AFTER, OK, S.EXPIRED),
        (S.QUEUED, AFTER + 100, FAIL, S.EXPIRED),
        *[(final, BEFORE, OK, final) for final in FINAL],
    ],
)
def test_complete_takes_the_first_result_before_expiry_only(
    status: CommandStatus, now: float, result: CommandResultMessage, expected: CommandStatus
) -> None:
    before = command(status)
    after = complete(before, result, now)
    assert after.status is expected
    if expected in (S.SUCCEEDED, S.FAILED) and status.pending:
        assert (after.result, after.reason, after.completed_at) == (result.result, result.reason, now)
    elif expected is S.EXPIRED and status.pending:
        assert after.result is None and after.completed_at == before.expires_at
    else:
        assert after == before


def test_expire_only_takes_due_pending_commands() -> None:
    assert expire(command(S.DELIVERED), BEFORE) == command(S.DELIVERED)
    expired = expire(command(S.DELIVERED), AFTER + 5)
    assert expired.status is S.EXPIRED and expired.completed_at == AFTER
    assert expire(command(S.SUCCEEDED), AFTER + 5).status is S.SUCCEEDED


@pytest.mark.parametrize(("status", "now"), [(S.QUEUED, BEFORE), (S.DELIVERED, BEFORE)])
def test_cancel_while_pending(status: CommandStatus, now: float) -> None:
    cancelled = cancel(command(status), now)
    assert cancelled.status is S.CANCELLED and cancelled.completed_at == now


@pytest.mark.parametrize(("status", "now"), [*[(f, BEFORE) for f in FINAL], (S.DELIVERED, AFTER)])
def test_cancel_of_a_finished_or_due_command_is_409(status: CommandStatus, now: float) -> None:
    code, message = code_of(cancel, command(status), now)
    assert code == ErrorCode.CONFLICT and "only QUEUED or DELIVERED" in message


def test_final_records_are_kept_for_the_retention_after_completion() -> None:
    assert retention_ttl(command(S.DELIVERED), T0, 100) is None
    assert retention_ttl(command(S.SUCCEEDED), T0 + 1, 100) == 100
    assert retention_ttl(command(S.SUCCEEDED), T0 + 51, 100) == 50
    assert retention_ttl(command(S.SUCCEEDED), T0 + 500, 100) == 1


Operation = tuple[str, float, CommandResultMessage | None]
operations = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "complete", "expire", "cancel"]),
        st.floats(0, 5),
        st.sampled_from([OK, FAIL, CommandResultMessage(status=S.SUCCEEDED, result={"other": 2})]),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(ttl=st.floats(1, 20), ops=operations)
def test_a_final_status_never_changes_and_the_first_result_wins(ttl: float, ops: list[Operation]) -> None:
    current = command(S.QUEUED, ttl=ttl)
    now = T0
    first_final: DeviceCommand | None = None
    deliveries = 0
    for name, step, result in ops:
        now += step
        try:
            if name == "deliver":
                current = deliver(current, now)
                deliveries += current.status is S.DELIVERED and first_final is None
            elif name == "complete":
                assert result is not None
                current = complete(current, result, now)
            elif name == "expire":
                current = expire(current, now)
            else:
                current = cancel(current, now)
        except TwinError as error:
            assert error.code == ErrorCode.CONFLICT and (first_final is not None or now >= current.expires_at)
        if first_final is not None:
            assert current == first_final
        elif not current.pending:
            first_final = current
            assert current.completed_at is not None
            if current.status is S.EXPIRED:
                assert current.completed_at == current.expires_at and current.result is None
            else:
                assert current.completed_at < current.expires_at
        assert current.pending == (current.completed_at is None)
    assert current.deliveries == deliveries


@given(
    st.builds(
        DeviceCommand,
        id=st.from_regex(r"\A[a-z0-9]{1,10}\Z"),
        device_id=st.just("dev-1"),
        name=st.just("n"),
        args=st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=3),
        created_at=st.floats(0, 2e9),
        expires_at=st.floats(0, 2e9),
        status=st.sampled_from(CommandStatus),
        result=st.none() | st.just({"k": [1, "x"]}),
        reason=st.none() | st.text(max_size=5),
        deliveries=st.integers(0, 10),
        completed_at=st.none() | st.floats(0, 2e9),
    )
)
def test_records_round_trip_through_json(record: DeviceCommand) -> None:
    assert DeviceCommand.from_json(json.loads(json.dumps(record.to_json()))) == record


# -- index -----------------------------------------------------------------------------------------


def entry(
    status: CommandStatus, created: float = T0, expires: float = T0 + 60, done: float | None = None
) -> IndexEntry:
    return IndexEntry(created, expires, status, done if done is not None or status.pending else created + 1)


def test_the_index_moves_statuses_forward_only() -> None:
    index = CommandIndex().with_commands([command(S.QUEUED)])
    assert index.entries["c1"].status is S.QUEUED
    index = index.with_commands([command(S.DELIVERED)])
    assert index.entries["c1"].status is S.DELIVERED
    index = index.with_commands([command(S.SUCCEEDED)])
    assert index.with_commands([command(S.QUEUED), command(S.DELIVERED), command(S.EXPIRED)]) == index
    assert index.entries["c1"] == IndexEntry(T0, T0 + 60, S.SUCCEEDED, T0 + 1)


@given(st.permutations([S.QUEUED, S.DELIVERED, S.FAILED]))
def test_index_refreshes_in_any_order_end_at_the_furthest_status(order: list[CommandStatus]) -> None:
    index = CommandIndex()
    for status in order:
        index = index.with_commands([command(status)])
    assert index.entries["c1"].status is S.FAILED


def test_index_lists_and_counts() -> None:
    index = CommandIndex(
        {
            "old": entry(S.DELIVERED, T0, T0 + 5),
            "new": entry(S.QUEUED, T0 + 2, T0 + 100),
            "done": entry(S.SUCCEEDED, T0 + 1),
        }
    )
    assert index.pending_ids() == ["old", "new"]
    assert index.newest_first() == ["new", "done", "old"]
    assert index.live_pending(T0 + 1) == 2 and index.live_pending(T0 + 5) == 1
    assert CommandIndex.from_json(json.loads(json.dumps(index.to_json()))) == index
    assert CommandIndex.from_json(None) == CommandIndex()
    assert index.without(["old", "nope"]).pending_ids() == ["new"]


def test_pruning_drops_what_the_store_dropped_and_the_oldest_finished_beyond_the_cap() -> None:
    index = CommandIndex(
        {
            "gone": entry(S.SUCCEEDED, T0, done=T0 + 1),
            "kept": entry(S.FAILED, T0 + 5, done=T0 + 50),
            "p1": entry(S.QUEUED, T0 + 1),
            "p2": entry(S.DELIVERED, T0 + 2),
            "late": entry(S.EXPIRED, T0 + 3, done=T0 + 60),
        }
    )
    pruned = index.pruned(T0 + 101, retention=100, max_entries=10)
    assert set(pruned.entries) == {"kept", "p1", "p2", "late"}
    capped = index.pruned(T0 + 101, retention=100, max_entries=3)
    assert set(capped.entries) == {"kept", "p1", "p2"}  # `late` was created before `kept`
    assert set(index.pruned(T0, 100, max_entries=1).entries) == {"p1", "p2"}  # pending always stay


def test_next_due_is_the_earliest_expiry_or_a_redelivery_of_a_never_published_command() -> None:
    assert CommandIndex({"d": entry(S.SUCCEEDED)}).next_due(T0, 10) is None
    assert CommandIndex({"d": entry(S.DELIVERED, T0, T0 + 60)}).next_due(T0, 10) == T0 + 60
    queued = CommandIndex({"q": entry(S.QUEUED, T0, T0 + 60)})
    assert queued.next_due(T0 + 1, 10) == T0 + 10
    assert queued.next_due(T0 + 20, 10) == T0 + 30  # its redelivery is overdue: again from now
    assert queued.next_due(T0 + 55, 10) == T0 + 60
    both = CommandIndex({"q": entry(S.QUEUED, T0, T0 + 60), "d": entry(S.DELIVERED, T0, T0 + 5)})
    assert both.next_due(T0, 10) == T0 + 5


def test_settle_expires_due_commands_keeps_pending_and_forgets_entries_that_never_got_a_record() -> None:
    index = CommandIndex(
        {
            "due": entry(S.DELIVERED, T0, T0 + 5),
            "live": entry(S.QUEUED, T0 + 1, T0 + 60),
            "done": entry(S.DELIVERED, T0 + 2, T0 + 60),
            "ghost": entry(S.QUEUED, T0 + 3, T0 + 5),
            "coming": entry(S.QUEUED, T0 + 4, T0 + 60),
            "final": entry(S.SUCCEEDED, T0),
        }
    )
    records = {
        "due": command(S.DELIVERED, id="due", ttl=5),
        "live": command(S.QUEUED, id="live", created_at=T0 + 1),
        "done": command(S.SUCCEEDED, id="done"),
        "ghost": None,
        "coming": None,
    }
    settled = settle(index, records, T0 + 10)
    assert [c.id for c in settled.expired] == ["due"] and settled.expired[0].status is S.EXPIRED
    assert [c.id for c in settled.pending] == ["live"]
    assert settled.forget == ["ghost"]
    assert sorted(c.id for c in settled.seen) == ["done", "live"]


def test_resend_due_picks_never_published_commands_after_the_delay() -> None:
    queued = command(S.QUEUED)
    assert resend_due([queued, command(S.DELIVERED, id="d")], T0 + 10, 10) == [queued]
    assert resend_due([queued], T0 + 9, 10) == []


# -- due shards ------------------------------------------------------------------------------------


def test_due_shards_schedule_earliest_and_reschedule_only_if_untouched() -> None:
    shard = DueShard().scheduled("a", T0 + 10, "t1").scheduled("a", T0 + 20, "t2")
    assert shard.devices["a"].at == T0 + 10 and shard.devices["a"].token == "t2"
    assert shard.rescheduled("a", "t1", None, "t3") == shard  # scheduled since the sweep read it
    moved = shard.rescheduled("a", "t2", T0 + 50, "t3")
    assert moved.devices["a"].at == T0 + 50
    assert "a" not in shard.rescheduled("a", "t2", None, "t3").devices
    assert DueShard().rescheduled("a", "t1", T0, "t3") == DueShard()
    both = shard.scheduled("b", T0 + 5, "t4")
    assert both.due(T0 + 10) == [(T0 + 5, "b", "t4"), (T0 + 10, "a", "t2")] and both.due(T0) == []
    assert DueShard.from_json(json.loads(json.dumps(both.to_json()))) == both
    assert 0 <= due_shard("dev-1") < 64 and due_shard("dev-1") == due_shard("dev-1")


# -- the app's shell -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class MemorySidecar:
    """The sidecar calls the commands app makes: state with ETags and TTLs, device publishes."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[dict[str, Any], str, int | None]] = {}
        self.writes = 0
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.publish_fails = False
        self.race: tuple[str, dict[str, Any]] | None = None
        """(key, value) another writer stores just before our next write of that key."""

    async def get(self, key: str, store: str = "") -> Stored:
        value, etag, _ = self.items.get(key, (None, None, None))  # type: ignore[arg-type]
        return Stored(key, value, etag)

    async def get_many(self, keys: Sequence[str], store: str = "") -> dict[str, Stored]:
        return {key: await self.get(key) for key in keys}

    async def write_each(self, writes: Sequence[Write], store: str = "") -> None:
        (write,) = writes  # the commands app writes one key at a time
        await self._save(write.key, write.value, write.etag, write.ttl_seconds)

    async def _save(self, key: str, value: dict[str, Any], etag: str | None, ttl_seconds: int | None) -> None:
        await asyncio.sleep(0)
        if self.race is not None and self.race[0] == key:
            self.writes += 1
            self.items[key] = (self.race[1], f"race-{self.writes}", None)
            self.race = None
        current = self.items.get(key)
        if (current[1] if current else None) != etag:
            raise WriteFailed(key)
        self.writes += 1
        ttl = current[2] if ttl_seconds is None and current else ttl_seconds
        self.items[key] = (json.loads(json.dumps(value)), str(self.writes), ttl)

    async def publish_device(self, topic: str, payload: dict[str, Any]) -> None:
        if self.publish_fails:
            raise RuntimeError("broker away")
        self.published.append((topic, payload))

    def record(self, device_id: str, command_id: str) -> DeviceCommand:
        return DeviceCommand.from_json(self.items[record_key(device_id, command_id)][0])

    def ttl(self, key: str) -> int | None:
        return self.items[key][2]


def service(sidecar: MemorySidecar, clock: Clock, **overrides: Any) -> CommandService:
    ids = iter(f"cmd{i}" for i in range(1000))
    settings_ = CommandsSettings(**{"commands_redeliver_after": 10.0, "commands_retention": 1000.0, **overrides})
    return CommandService(sidecar, settings_, clock, lambda: next(ids))  # type: ignore[arg-type]


@pytest.fixture
def parts() -> tuple[MemorySidecar, Clock, CommandService]:
    sidecar, clock = MemorySidecar(), Clock()
    return sidecar, clock, service(sidecar, clock)


Parts = tuple[MemorySidecar, Clock, CommandService]


def result(status: str = "SUCCEEDED", **fields: Any) -> bytes:
    return json.dumps({"status": status, **fields}).encode()


async def test_create_stores_publishes_and_marks_delivered(parts: Parts) -> None:
    sidecar, _, commands = parts
    made, created = await commands.create("dev-1", {"name": "ping", "args": {"a": 1}, "ttlSeconds": 60})
    assert created and made.status is S.DELIVERED and made.deliveries == 1
    assert sidecar.published == [("dev-1/commands/cmd0", made.message())]
    assert sidecar.record("dev-1", "cmd0") == made
    assert (await commands.store.index("dev-1")).entries["cmd0"].status is S.QUEUED
    assert sidecar.ttl(index_key("dev-1")) == -1  # pending: the index never expires


async def test_bad_requests_store_nothing(parts: Parts) -> None:
    sidecar, _, commands = parts
    for body in ({"name": "bad name"}, {"name": "a", "ttlSeconds": 0}, {"name": "a", "args": {"x": "y" * 5000}}):
        with pytest.raises(TwinError):
            await commands.create("dev-1", body)
    assert sidecar.items == {} and sidecar.published == []


async def test_the_first_result_wins_and_later_ones_are_ignored(parts: Parts) -> None:
    sidecar, clock, commands = parts
    await commands.create("dev-1", {"name": "ping"})
    clock.now += 1
    assert await commands.take_result("dev-1", "cmd0", result(result={"n": 1})) is Outcome.SUCCESS
    assert await commands.take_result("dev-1", "cmd0", result("FAILED", reason="again")) is Outcome.SUCCESS
    done = await commands.get("dev-1", "cmd0")
    assert (done.status, done.result, done.completed_at) == (S.SUCCEEDED, {"n": 1}, T0 + 1)
    assert sidecar.ttl(record_key("dev-1", "cmd0")) == 1000  # retention after completion
    assert sidecar.ttl(index_key("dev-1")) == 1000  # nothing pending: the index goes too, later
    assert (await commands.store.index("dev-1")).entries["cmd0"].status is S.SUCCEEDED


async def test_two_results_racing_on_one_record_keep_exactly_one(parts: Parts) -> None:
    sidecar, _, commands = parts
    await commands.create("dev-1", {"name": "ping"})
    key = record_key("dev-1", "cmd0")
    other = replace(sidecar.record("dev-1", "cmd0"), status=S.FAILED, reason="other", completed_at=T0)
    sidecar.race = (key, other.to_json())  # another replica takes another result first
    await commands.take_result("dev-1", "cmd0", result(result={"n": 1}))
    assert sidecar.record("dev-1", "cmd0") == other


async def test_malformed_and_unknown_results_change_nothing(parts: Parts) -> None:
    sidecar, _, commands = parts
    await commands.create("dev-1", {"name": "ping"})
    before = dict(sidecar.items)
    assert await commands.take_result("dev-1", "cmd0", b"not json") is Outcome.DROP
    assert await commands.take_result("dev-1", "cmd0", result("MAYBE")) is Outcome.DROP
    assert await commands.take_result("dev-1", "nope", result()) is Outcome.SUCCESS
    assert sidecar.items == before


async def test_a_result_after_expiry_expires_the_command_instead(parts: Parts) -> None:
    sidecar, clock, commands = parts
    await commands.create("dev-1", {"name": "ping", "ttlSeconds": 5})
    clock.now += 5
    await commands.take_result("dev-1", "cmd0", result(result={"late": True}))
    late = sidecar.record("dev-1", "cmd0")
    assert late.status is S.EXPIRED and late.result is None and late.completed_at == T0 + 5


async def test_sync_republishes_pending_commands_oldest_first_and_expires_due_ones(parts: Parts) -> None:
    sidecar, clock, commands = parts
    await commands.create("dev-1", {"name": "short", "ttlSeconds": 5})
    clock.now += 1
    await commands.create("dev-1", {"name": "long", "ttlSeconds": 60})
    clock.now += 1
    await commands.create("dev-1", {"name": "done"})
    await commands.take_result("dev-1", "cmd2", result())
    await commands.create("dev-2", {"name": "other"})
    sidecar.published.clear()
    clock.now = T0 + 6
    assert await commands.sync("dev-1") == 1
    assert [topic for topic, _ in sidecar.published] == ["dev-1/commands/cmd1"]
    assert sidecar.record("dev-1", "cmd0").status is S.EXPIRED
    assert sidecar.record("dev-1", "cmd1").deliveries == 2
    index = await commands.store.index("dev-1")
    assert index.pending_ids() == ["cmd1"] and index.entries["cmd0"].status is S.EXPIRED


async def test_reads_expire_lazily_and_list_filters_newest_first(parts: Parts) -> None:
    _, clock, commands = parts
    await commands.create("dev-1", {"name": "a", "ttlSeconds": 5})
    clock.now += 1
    await commands.create("dev-1", {"name": "b", "ttlSeconds": 60})
    clock.now += 10
    assert [c.name for c in await commands.list_commands("dev-1", None, 10)] == ["b", "a"]
    assert [c.name for c in await commands.list_commands("dev-1", S.EXPIRED, 10)] == ["a"]
    assert [c.name for c in await commands.list_commands("dev-1", S.DELIVERED, 10)] == ["b"]
    assert len(await commands.list_commands("dev-1", None, 1)) == 1
    assert await commands.list_commands("nobody", None, 10) == []


async def test_cancel_only_pending_commands(parts: Parts) -> None:
    _, _, commands = parts
    await commands.create("dev-1", {"name": "a"})
    cancelled = await commands.cancel("dev-1", "cmd0")
    assert cancelled.status is S.CANCELLED
    with pytest.raises(TwinError) as error:
        await commands.cancel("dev-1", "cmd0")
    assert error.value.code == ErrorCode.CONFLICT
    await commands.take_result("dev-1", "cmd0", result())
    assert (await commands.get("dev-1", "cmd0")).status is S.CANCELLED
    with pytest.raises(TwinError) as error:
        await commands.cancel("dev-1", "nope")
    assert error.value.code == ErrorCode.NOT_FOUND


async def test_a_caller_chosen_id_makes_create_idempotent(parts: Parts) -> None:
    sidecar, _, commands = parts
    first, created = await commands.create("dev-1", {"name": "a", "args": {"x": 1}, "id": "job-1"})
    again, created_again = await commands.create("dev-1", {"name": "a", "args": {"x": 1}, "id": "job-1"})
    assert created and not created_again and again == first and len(sidecar.published) == 1
    with pytest.raises(TwinError) as error:
        await commands.create("dev-1", {"name": "b", "id": "job-1"})
    assert error.value.code == ErrorCode.CONFLICT and "already used" in error.value.message


async def test_pending_commands_per_device_are_limited(parts: Parts) -> None:
    sidecar, clock, _ = parts
    commands = service(sidecar, clock, commands_max_pending=2)
    await commands.create("dev-1", {"name": "a", "ttlSeconds": 5})
    await commands.create("dev-1", {"name": "b"})
    with pytest.raises(TwinError) as error:
        await commands.create("dev-1", {"name": "c"})
    assert error.value.code == ErrorCode.TOO_MANY_REQUESTS
    await commands.create("dev-2", {"name": "c"})
    clock.now += 5  # the first one is due: it no longer counts
    assert (await commands.create("dev-1", {"name": "c"}))[1]


async def test_a_failed_publish_leaves_the_command_queued_and_the_sweep_sends_it_later(parts: Parts) -> None:
    sidecar, clock, commands = parts
    sidecar.publish_fails = True
    made, _ = await commands.create("dev-1", {"name": "a"})
    assert made.status is S.QUEUED and sidecar.published == []
    sidecar.publish_fails = False
    clock.now += 5
    assert await commands.sweep_once() == 0  # not due yet
    clock.now += 5
    assert await commands.sweep_once() == 1
    assert [topic for topic, _ in sidecar.published] == ["dev-1/commands/cmd0"]
    assert sidecar.record("dev-1", "cmd0").status is S.DELIVERED
    clock.now += 10  # the next visit only refreshes the index; then the device waits for its expiry
    assert await commands.sweep_once() == 1
    assert await commands.sweep_once() == 0 and len(sidecar.published) == 1


async def test_the_sweep_expires_commands_of_devices_that_stay_away(parts: Parts) -> None:
    sidecar, clock, commands = parts
    for device in ("dev-1", "dev-2"):
        await commands.create(device, {"name": "a", "ttlSeconds": 30})
    clock.now += 10
    assert await commands.sweep_once() == 2  # the redelivery check: both were published fine
    assert await commands.sweep_once() == 0
    clock.now = T0 + 30
    assert await commands.sweep_once() == 2
    assert {sidecar.record(d, "cmd0" if d == "dev-1" else "cmd1").status for d in ("dev-1", "dev-2")} == {S.EXPIRED}
    assert all(shard.devices == {} for shard in await commands.store.shards())


async def test_a_create_scheduled_while_a_sweep_visits_is_not_unscheduled(parts: Parts) -> None:
    """The sweep saw nothing left to do for a device, but a command was queued for it after the
    sweep read its index: the sweep's reschedule must leave the new schedule alone."""
    _, clock, commands = parts
    await commands.create("dev-1", {"name": "a", "ttlSeconds": 5})
    clock.now += 5
    ((_, _, token),) = (await commands.store.shards())[due_shard("dev-1")].due(clock.now)
    reschedule = commands.store.reschedule

    async def create_first(device_id: str, seen_token: str, at: float | None) -> None:
        assert at is None  # the visit found nothing pending
        await commands.create("dev-1", {"name": "b", "ttlSeconds": 100})
        await reschedule(device_id, seen_token, at)

    commands.store.reschedule = create_first  # type: ignore[method-assign]
    await commands._visit("dev-1", token)
    scheduled = (await commands.store.shards())[due_shard("dev-1")].devices["dev-1"]
    assert scheduled.token != token and scheduled.at <= clock.now + 10
    commands.store.reschedule = reschedule  # type: ignore[method-assign]
    await commands.sweep_once()  # the next round settles it: `b` was published, it waits for its expiry
    assert (await commands.store.shards())[due_shard("dev-1")].devices["dev-1"].at == clock.now + 100


async def test_an_index_entry_whose_record_never_came_is_forgotten_once_due(parts: Parts) -> None:
    sidecar, clock, commands = parts
    await commands.create("dev-1", {"name": "a", "ttlSeconds": 5})
    del sidecar.items[record_key("dev-1", "cmd0")]  # as if the create died before its record write
    assert await commands.sync("dev-1") == 0
    assert "cmd0" in (await commands.store.index("dev-1")).entries
    clock.now += 5
    await commands.sync("dev-1")
    assert (await commands.store.index("dev-1")).entries == {}

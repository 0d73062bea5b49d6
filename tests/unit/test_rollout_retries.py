"""Retries (by policy, with backoff, only for named failure kinds; on an operator's request) and the
software key's install-later and consent rules, on one twin: the marks say where each twin stands."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.rollout import (
    ConfigurationState,
    InstallBody,
    InstallPolicy,
    RetryPolicy,
)
from services.domain.errors import TwinError
from services.domain.rollout.configuration import request_retry, trigger_install, validate_spec
from services.domain.rollout.retries import backoff, check_retry_policy
from services.domain.rollout.twin_plan import CompiledConfiguration, Outcome, plan_twin
from services.domain.software.twin_key import Gate, UpdateStatus, install_gate, satisfied, verdict
from services.domain.twin.limits import Limits
from tests.unit.rollout_twins import NOW, Twin, config

UPDATE = {"software": {"artifact": "fw-2.0.0", "version": "2.0.0"}}


def failed(kind: str, retry: int = 0) -> dict[str, Any]:
    value: dict[str, Any] = {"version": "1.0.0", "attempt": "fw-2.0.0", "status": "FAILED", "failure": kind}
    return {"software": value | ({"retry": retry} if retry else {})}


def with_policy(**policy: Any) -> dict[str, CompiledConfiguration]:
    c = config("fw", UPDATE, **policy)
    return {"fw": c}


@given(st.integers(0, 600), st.floats(1, 10), st.integers(1, 10))
def test_backoff_grows_by_the_factor_and_stops_at_the_cap(base: int, factor: float, attempts: int) -> None:
    policy = RetryPolicy(backoff_seconds=base, factor=factor, max_backoff_seconds=900, attempts=attempts)
    waits = [backoff(policy, n) for n in range(1, attempts + 1)]
    assert all(a <= b for a, b in pairwise(waits))
    assert waits[0] == min(base, 900)
    assert all(w <= 900 for w in waits)


def test_a_failed_download_is_scheduled_then_retried_and_the_attempts_are_on_the_mark() -> None:
    configurations = with_policy(retry=RetryPolicy(attempts=2, backoff_seconds=30, factor=2))
    twin = Twin()
    twin.converge(configurations, {"fw": 0})
    twin.reported = failed("download")
    c = configurations["fw"]
    assert twin.facts(configurations).outcome(c, NOW).outcome is Outcome.RETRYING  # not failed: retried
    # first the due time is recorded ...
    assert twin.converge(configurations, {}, NOW + 5) == 1
    assert twin.configurations["fw"]["retryAt"] == NOW + 35
    assert twin.converge(configurations, {}, NOW + 20) == 0  # not due yet
    # ... then, once due, the next attempt: a new retry in the desired reference
    assert twin.converge(configurations, {}, NOW + 35) == 1
    assert twin.desired["software"] == {**UPDATE["software"], "retry": 1}
    assert twin.configurations["fw"]["attempt"] == 2 and "retryAt" not in twin.configurations["fw"]
    placement = twin.facts(configurations).outcome(c, NOW + 36)
    assert placement.outcome is Outcome.PENDING and placement.attempt == 2  # the old failure is not this attempt's
    # the second attempt fails too: backoff doubled; the third fails: given up
    twin.reported = failed("download", retry=1)
    twin.converge(configurations, {}, NOW + 40)
    assert twin.configurations["fw"]["retryAt"] == NOW + 40 + 60
    twin.converge(configurations, {}, NOW + 100)
    twin.reported = failed("download", retry=2)
    assert twin.converge(configurations, {}, NOW + 200) == 0
    final = twin.facts(configurations).outcome(c, NOW + 200)
    assert (final.outcome, final.failure, final.attempt) == (Outcome.FAILED, "download", 3)
    # and a retry that succeeds counts as succeeded
    twin.reported = {"software": {"artifact": "fw-2.0.0", "version": "2.0.0", "status": "UPDATED"}}
    assert twin.facts(configurations).outcome(c, NOW + 200).outcome is Outcome.SUCCEEDED


def test_only_the_named_failure_kinds_are_retried() -> None:
    configurations = with_policy(retry=RetryPolicy(on=["download"]))
    twin = Twin()
    twin.converge(configurations, {"fw": 0})
    twin.reported = failed("install")
    placement = twin.facts(configurations).outcome(configurations["fw"], NOW)
    assert (placement.outcome, placement.failure) == (Outcome.FAILED, "install")
    assert twin.converge(configurations, {}, NOW + 1000) == 0


@pytest.mark.parametrize("kind", ["signature", "version", "refused", "failed", "nonsense"])
def test_a_refused_signature_and_other_hopeless_kinds_cannot_be_named(kind: str) -> None:
    with pytest.raises(TwinError, match=r"rollout\.retry\.on"):
        check_retry_policy(RetryPolicy(on=[kind]))


def test_a_timeout_is_retried_for_any_key_by_restarting_its_clock() -> None:
    configurations = {"cfg": config("cfg", {"config": {"rate": 5}}, timeout=60, retry=RetryPolicy(on=["timeout"]))}
    twin = Twin()
    twin.converge(configurations, {"cfg": 0})
    twin.converge(configurations, {}, NOW + 60)  # timed out: retry scheduled
    twin.converge(configurations, {}, NOW + 60 + 60)  # due: next attempt
    mark = twin.configurations["cfg"]
    assert (mark["attempt"], mark["at"]) == (2, NOW + 120)
    assert twin.desired == {"config": {"rate": 5}}
    assert twin.facts(configurations).outcome(configurations["cfg"], NOW + 121).outcome is Outcome.PENDING


def test_an_operator_retry_tries_each_failed_twin_once_whatever_its_kind() -> None:
    c = config("fw", UPDATE)
    twin = Twin()
    twin.converge({"fw": c}, {"fw": 0})
    twin.reported = failed("install")
    asked = CompiledConfiguration(request_retry(c.configuration, None, NOW + 10))
    configurations = {"fw": asked}
    assert twin.facts(configurations).outcome(asked, NOW + 10).outcome is Outcome.RETRYING
    assert twin.converge(configurations, {}, NOW + 10) == 1
    assert twin.configurations["fw"]["attempt"] == 2 and twin.configurations["fw"]["request"] == 1
    twin.reported = failed("install", retry=1)
    assert twin.converge(configurations, {}, NOW + 20) == 0  # served: not again
    assert twin.facts(configurations).outcome(asked, NOW + 20).outcome is Outcome.FAILED
    again = CompiledConfiguration(request_retry(asked.configuration, ["d1", "other"], NOW + 30))
    assert twin.converge({"fw": again}, {}, NOW + 30) == 1
    assert twin.configurations["fw"]["attempt"] == 3


def test_download_only_waits_for_the_trigger_then_installs() -> None:
    c = config(
        "fw", UPDATE, install=InstallPolicy(later=True, auto_consent_seconds=600), stages=[{"count": 1}, {"count": 2}]
    )
    twin = Twin()
    twin.converge({"fw": c}, {"fw": 1})
    assert twin.desired["software"] == {**UPDATE["software"], "install": "later", "autoConsentAt": NOW + 600}
    twin.reported = {"software": {"version": "1.0.0", "attempt": "fw-2.0.0", "status": "WAITING_FOR_INSTALL"}}
    placement = twin.facts({"fw": c}).outcome(c, NOW)
    assert (placement.outcome, placement.phase) == (Outcome.SUCCEEDED, "WAITING_FOR_INSTALL")  # downloaded
    assert twin.converge({"fw": c}, {}, NOW + 5) == 0
    other_stage = CompiledConfiguration(trigger_install(c.configuration, InstallBody(stage=1), NOW + 5))
    assert twin.converge({"fw": other_stage}, {}, NOW + 6) == 0  # stage 1 (index 0): not this twin's
    triggered = CompiledConfiguration(trigger_install(c.configuration, InstallBody(stage=2), NOW + 10))
    assert twin.converge({"fw": triggered}, {}, NOW + 10) == 1
    assert twin.desired["software"] == {**UPDATE["software"], "install": "now", "autoConsentAt": NOW + 610}
    assert twin.configurations["fw"]["installAt"] == NOW + 10
    assert twin.facts({"fw": triggered}).outcome(triggered, NOW + 11).outcome is Outcome.PENDING  # installing
    twin.reported = {"software": {"artifact": "fw-2.0.0", "version": "2.0.0", "status": "UPDATED"}}
    assert twin.facts({"fw": triggered}).outcome(triggered, NOW + 20).outcome is Outcome.SUCCEEDED


def test_install_triggers_and_the_install_policy_are_checked() -> None:
    plain = config("cfg", {"config": 1})
    with pytest.raises(TwinError, match="installs as it downloads"):
        trigger_install(plain.configuration, InstallBody(all=True), NOW)
    with pytest.raises(TwinError, match="needs a software update"):
        validate_spec(config("cfg", {"config": 1}, install=InstallPolicy(later=True)).configuration.spec, Limits())
    later = config("fw", UPDATE, install=InstallPolicy(later=True)).configuration
    with pytest.raises(TwinError, match="say what"):
        trigger_install(later, InstallBody(), NOW)
    with pytest.raises(TwinError, match="has 1 stages"):
        trigger_install(later, InstallBody(stage=3), NOW)
    paused = later.model_copy(update={"state": ConfigurationState.DRAFT})
    with pytest.raises(TwinError, match="cannot install"):
        trigger_install(paused, InstallBody(all=True), NOW)


def test_the_device_side_gate_and_what_counts_as_done() -> None:
    wanted = {"artifact": "a", "version": "2"}
    later = {**wanted, "install": "later"}
    assert install_gate(later, True, True, None, 0) is Gate.WAIT_FOR_INSTALL
    assert install_gate(wanted, False, False, None, 0) is Gate.INSTALL
    assert install_gate(wanted, True, False, None, 0) is Gate.WAIT_FOR_CONSENT
    assert install_gate(wanted, True, True, None, 0) is Gate.INSTALL
    assert install_gate(wanted, True, False, 100, 99) is Gate.WAIT_FOR_CONSENT
    assert install_gate(wanted, True, False, 100, 100) is Gate.INSTALL
    assert install_gate({**wanted, "autoConsentAt": 50}, True, False, 100, 60) is Gate.INSTALL
    waiting = {"version": "1", "attempt": "a", "status": UpdateStatus.WAITING_FOR_CONSENT.value}
    assert satisfied(waiting, wanted)  # nothing to do until consent comes
    assert not satisfied(waiting, wanted, consented=True)
    assert not satisfied(waiting, {**wanted, "autoConsentAt": 10}, now=10)
    ready = {"version": "1", "attempt": "a", "status": UpdateStatus.WAITING_FOR_INSTALL.value}
    assert satisfied(ready, later) and not satisfied(ready, wanted)  # the trigger came
    gave_up = {"version": "1", "attempt": "a", "status": "FAILED", "failure": "download"}
    assert satisfied(gave_up, wanted) and not satisfied(gave_up, {**wanted, "retry": 1})
    assert satisfied({"artifact": "a", "version": "2", "status": "UPDATED"}, {**wanted, "retry": 3})
    assert verdict(gave_up, wanted).failure == "download"
    assert verdict(gave_up, {**wanted, "retry": 1}).state == "pending"  # an answer to an older attempt
    rolled = {"version": "1", "attempt": "a", "status": "ROLLED_BACK", "reason": "unhealthy"}
    assert (verdict(rolled, wanted).state, verdict(rolled, wanted).failure) == ("failed", "health")
    assert verdict(ready, later).state == "succeeded" and verdict(ready, wanted).state == "pending"


def test_an_error_mark_is_never_retried_even_on_request() -> None:
    c = config("fw", UPDATE, retry=RetryPolicy(on=["download"]))
    twin = Twin()
    twin.configurations = {"fw": {"status": "error", "keys": [], "stage": 0, "at": NOW, "reason": "413: too large"}}
    asked = CompiledConfiguration(request_retry(c.configuration, None, NOW + 1))
    placement = twin.facts({"fw": asked}).outcome(asked, NOW + 1)
    assert (placement.outcome, placement.failure) == (Outcome.FAILED, "refused")
    assert plan_twin(twin.facts({"fw": asked}), {"fw": asked}, {}, NOW + 1) is None

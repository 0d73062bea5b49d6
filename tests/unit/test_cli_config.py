"""`twin config create` options → the configuration spec the REST API takes."""

from __future__ import annotations

import pytest
import typer

from services.cli.config import parse_stage, spec_from_options
from services.contracts.rollout import ConfigurationSpec


def test_stages_are_percents_or_counts() -> None:
    assert parse_stage("10%") == {"percent": 10.0}
    assert parse_stage("50") == {"count": 50}
    with pytest.raises(typer.BadParameter):
        parse_stage("ten")


def test_options_make_a_valid_spec() -> None:
    spec = spec_from_options(
        "fw-2", 'tags.region == "eu"', 5, '{"config": {"rate": 5}}', ["onRate=reported.config.rate == 5"],
        ["1%", "10%", "100%"], 600, None, None, 300, 5.0, None, "abort", '{"config": {"rate": 10}}',
    )  # fmt: skip
    parsed = ConfigurationSpec.model_validate(spec)
    assert parsed.rollout.stages[0].percent == 1
    assert parsed.rollout.failure_threshold is not None and parsed.rollout.failure_threshold.action == "abort"
    assert parsed.rollout.rollback_content == {"config": {"rate": 10}}
    assert parsed.metrics == {"onRate": "reported.config.rate == 5"}


def test_bad_json_and_metrics_are_refused() -> None:
    with pytest.raises(typer.BadParameter, match="--content"):
        spec_from_options("x", "true", 0, "{", [], [], None, None, None, None, None, None, "pause", None)
    with pytest.raises(typer.BadParameter, match="NAME=CEL"):
        spec_from_options("x", "true", 0, "{}", ["nocondition"], [], None, None, None, None, None, None, "pause", None)


def test_schedule_retry_install_ramp_health_and_cohort_options_make_a_valid_policy() -> None:
    from services.cli.config import parse_time, parse_window, policy_from_options

    assert parse_time("2024-06-01T00:00:00Z") == parse_time("2024-06-01T00:00:00") == 1_717_200_000
    assert parse_window("sat,sun 22:00-02:00") == {"start": "22:00", "end": "02:00", "days": ["sat", "sun"]}
    assert parse_window("cron:0 2 * * 1-5@120") == {"cron": "0 2 * * 1-5", "durationMinutes": 120}
    with pytest.raises(typer.BadParameter, match="cron"):
        parse_window("cron:0 2 * * *")
    policy = policy_from_options(
        start="1717200000", windows=["22:00-02:00"], timezone_tag="tz", install_seconds=600, retries=2,
        retry_on=["download,install"], download_only=True, auto_consent=3600, ramp="10,2,50",
        health="reported.errors > 0", health_events=["error"], soak=120, cohorts=["tags.hw"],
    )  # fmt: skip
    spec = spec_from_options(
        "fw", "true", 0, '{"software": {"artifact": "a"}}', [], ["10%", "100%"], 600, None, None, None, None, None,
        "pause", None, policy,
    )  # fmt: skip
    rollout = spec.rollout
    assert rollout.schedule is not None and rollout.schedule.install_seconds == 600
    assert rollout.retry is not None and rollout.retry.on == ["download", "install"] and rollout.retry.attempts == 2
    assert rollout.install is not None and rollout.install.later and rollout.install.auto_consent_seconds == 3600
    assert rollout.ramp is not None and rollout.ramp.factor == 2
    assert rollout.health is not None and rollout.health.events == ["error"] and rollout.health.soak_seconds == 120
    assert rollout.cohorts is not None and rollout.cohorts.keys == ["tags.hw"]

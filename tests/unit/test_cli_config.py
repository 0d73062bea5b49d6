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

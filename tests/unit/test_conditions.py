"""Target conditions: parse errors name the position; evaluation never raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.errors import ErrorCode, TwinError
from services.domain.rollout.conditions import compile_condition, matches, twin_variables

TWIN = twin_variables(
    "sim-00001",
    {"region": "eu", "zones": ["a", "b"], "tier": 2},
    {"firmware": {"version": "1.4.0"}, "temperature": 21.5},
    {"config": {"rate": 5}},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tags.region == "eu"', True),
        ('tags.region == "us"', False),
        ('tags.region == "eu" && reported.firmware.version < "2.0"', True),
        ('"a" in tags.zones && tags.tier >= 2', True),
        ('deviceId.startsWith("sim-")', True),
        ("has(desired.config) && desired.config.rate == 5", True),
        ("!has(tags.hold)", True),
        ("reported.temperature > 20.0", True),
        ("true", True),
        ('reported.missing.version == "1"', False),  # a key the twin lacks: not targeted
        ("tags.region > 1", False),  # no such overload (string vs int): not targeted, no error
        ("tags.region", False),  # not a boolean
    ],
)
def test_conditions_over_one_twin(text: str, expected: bool) -> None:
    assert matches(compile_condition(text), TWIN) is expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('tags.region == "eu" &&', "line 1, column"),
        ('tags.region = "eu"', "line 1, column 13"),
        ('tags.region == "eu"\n  && (', "line 2"),
        ("region == 1", "Undefined variable"),
        ("   ", "empty"),
        ("true && " * 600 + "true", "at most"),
    ],
)
def test_bad_conditions_are_400_saying_where(text: str, says: str) -> None:
    with pytest.raises(TwinError) as caught:
        compile_condition(text)
    assert caught.value.code is ErrorCode.BAD_REQUEST and says in caught.value.message


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=4))
def test_evaluation_never_raises_whatever_the_twin_holds(tags: dict[str, object]) -> None:
    condition = compile_condition('tags.region == "eu" && tags.tier > 1 && reported.firmware.version < "2"')
    assert matches(condition, twin_variables("d", tags, {}, {})) in (True, False)


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ('tags.region == "eu"', ("tags",)),
        ('has(reported.tags) || deviceId != ""', ("deviceId", "tags", "reported")),  # a superset is fine
        ("has(desired.config)", ("desired",)),
        ("true", ()),
    ],
)
def test_only_the_variables_a_condition_names_are_handed_to_cel(text: str, reads: tuple[str, ...]) -> None:
    condition = compile_condition(text)
    assert condition.reads == reads
    assert matches(condition, TWIN) is (condition.program.execute(TWIN) is True)

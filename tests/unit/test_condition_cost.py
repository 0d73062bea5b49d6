"""Conditions are bounded in cost, as Kubernetes bounds CEL: estimated when created (400 naming the
limit) and checked against the twin at hand before each evaluation (the budget)."""

from __future__ import annotations

import pytest

from services.domain.errors import TwinError
from services.domain.rollout.conditions import MAX_CONDITION_COST, compile_condition, matches, twin_variables
from services.domain.rollout.cost import estimate

TEN = "[0,1,2,3,4,5,6,7,8,9]"
FIVE_NESTED = f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, {TEN}.all(d, {TEN}.all(e, a+b+c+d+e >= 0)))))"


@pytest.mark.parametrize(
    "text",
    [
        'tags.region == "eu" && reported.firmware.version < "2.0" && !has(tags.hold)',
        "reported.sensors.exists(s, s.ok == false)",
        "reported.xs.map(x, x * 2).filter(y, y > 3).size() > 2",
        f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, a + b + c >= 0)))",
        'deviceId.startsWith("sim") && 5 in reported.list',
    ],
)
def test_ordinary_conditions_are_within_the_limit(text: str) -> None:
    assert compile_condition(text).cost.at(4096) <= MAX_CONDITION_COST


@pytest.mark.parametrize(
    "text",
    [
        FIVE_NESTED,  # the known case: 10^5 steps per twin
        "reported.a.exists(x, reported.b.exists(y, x == y))",  # nested over twin data: n^2
        "reported.a.all(x, reported.b.all(y, reported.c.all(z, x + y + z > 0)))",
    ],
)
def test_a_condition_that_may_cost_too_much_is_refused_naming_the_limit(text: str) -> None:
    with pytest.raises(TwinError) as refused:
        compile_condition(text)
    assert int(refused.value.code) == 400 and f"{MAX_CONDITION_COST:,}" in refused.value.message


def test_nesting_multiplies_and_literals_count_their_length() -> None:
    one = estimate(f"{TEN}.all(a, a >= 0)").at(0)
    two = estimate(f"{TEN}.all(a, {TEN}.all(b, a + b >= 0))").at(0)
    assert 10 * one < two < 20 * one  # the inner literal is built again for every outer element
    assert estimate(f"{TEN} + {TEN}").at(0) > estimate(TEN).at(0)
    assert estimate("reported.xs.exists(x, x == 1)").degree == 1
    assert estimate("true").degree == 0


def test_the_runtime_budget_skips_an_evaluation_the_twin_would_make_too_costly() -> None:
    # compiled for small twins, then evaluated on one holding long lists: not run, not targeted
    condition = compile_condition("reported.a.exists(x, reported.b.exists(y, x == y))", max_collection=10)
    small = twin_variables("d", {}, {"a": [1, 2], "b": [2]}, {})
    large = twin_variables("d", {}, {"a": list(range(2000)), "b": list(range(2000))}, {})
    assert matches(condition, small) is True
    assert matches(condition, large) is False

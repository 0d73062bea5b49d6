"""Target conditions: which twins a configuration targets, as a CEL expression (the expression
language of Kubernetes and Dapr) over one twin: `deviceId`, `tags`, `reported`, `desired`.

    tags.region == "eu" && reported.firmware.version < "2.0" && !has(tags.hold)

A condition that does not parse is a 400 naming the line and column, and so is one that may cost
more than `MAX_CONDITION_COST` on a twin (`services.domain.rollout.cost`); an evaluation whose
bound on the twin at hand exceeds that budget is not run (the twin is not targeted), so no
condition keeps the app busy. Evaluating one never raises:
a twin lacking a key the condition reads, or holding a value of another type, is not targeted
(as with Azure IoT Hub's automatic configurations), and so is a result that is not a boolean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import cel

from services.domain.errors import bad_request
from services.domain.json_values import JsonObject
from services.domain.rollout.cost import ONE, Poly, estimate, largest_collection
from services.domain.twin.limits import Limits

MAX_CONDITION_CHARS = 4096
MAX_CONDITION_COST = 100_000
"""Estimated cost units one evaluation may take (about 6 ms here: a unit is about 65 ns of CEL)."""
MAX_COLLECTION = Limits().max_state_bytes // 2
"""The longest list (or map) a twin can hold: each element takes at least two bytes of its state."""
VARIABLES = ("deviceId", "tags", "reported", "desired")
_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*)")
_EMPTY_TWIN: JsonObject = {"deviceId": "", "tags": {}, "reported": {}, "desired": {}}
_NAMED = re.compile(r"\b(" + "|".join(VARIABLES) + r")\b")


@dataclass(frozen=True)
class TargetCondition:
    text: str
    program: Any = field(compare=False, repr=False)
    cost: Poly = field(default=ONE, compare=False, repr=False)
    """Its cost as a polynomial in the twin's largest collection."""
    budget: float = MAX_CONDITION_COST
    reads: tuple[str, ...] = VARIABLES
    """The variables its text names (a superset of those it reads): only these are handed to CEL,
    which converts every value it is given, read or not (a condition on `tags` took 42 µs with the
    whole twin and 7 µs with its tags, `bench/rollout.py`'s twins)."""


def compile_condition(
    text: str, max_collection: int = MAX_COLLECTION, budget: float = MAX_CONDITION_COST
) -> TargetCondition:
    """Parse and check a condition; raises a 400 `TwinError` saying where and what is wrong (and
    when it may cost more than `budget` on a twin whose collections hold `max_collection` items)."""
    if not text.strip():
        raise bad_request("target condition is empty; use `true` to target every twin")
    if len(text) > MAX_CONDITION_CHARS:
        raise bad_request(f"target condition is {len(text)} characters; at most {MAX_CONDITION_CHARS}")
    try:
        program = cel.compile(text)
    except ValueError as error:
        raise bad_request(f"target condition: {_syntax_error(str(error))}") from None
    try:  # names are only resolved when evaluated: try it on an empty twin
        program.execute(_EMPTY_TWIN)
    except RuntimeError as error:
        if "Undefined variable or function" in str(error):
            raise bad_request(
                f"target condition: {str(error).split('.')[0]}; a condition reads {', '.join(VARIABLES)}"
            ) from None
    except (KeyError, TypeError, ValueError):
        pass  # depends on the twin's data: fine
    try:
        cost = estimate(text)
    except ValueError:
        raise bad_request("target condition: its cost cannot be estimated (unsupported syntax)") from None
    worst = cost.at(max_collection)
    if worst > budget:
        raise bad_request(
            f"target condition may cost up to {worst:,.0f} units on one twin; the limit is {budget:,.0f} "
            "(each comprehension multiplies its body by the length of what it ranges over)"
        )
    reads = tuple(name for name in VARIABLES if name in set(_NAMED.findall(text)))
    return TargetCondition(text, program, cost, budget, reads)


def twin_variables(device_id: str, tags: JsonObject, reported: JsonObject, desired: JsonObject) -> JsonObject:
    return {"deviceId": device_id, "tags": tags, "reported": reported, "desired": desired}


def matches(condition: TargetCondition, variables: JsonObject) -> bool:
    """Whether the twin (`twin_variables`) is targeted; any evaluation error means no, and so does
    a bound on this twin above the condition's budget (the evaluation is not run)."""
    if condition.cost.degree and condition.cost.at(largest_collection(variables.values())) > condition.budget:
        return False
    try:
        result = condition.program.execute({name: variables[name] for name in condition.reads})
    except (KeyError, TypeError, ValueError, RuntimeError):
        return False
    return result is True


def _syntax_error(message: str) -> str:
    found = _POSITION.search(message)
    if found is None:
        return message
    line, column, what = found.groups()
    return f"syntax error at line {line}, column {column}: {what}"

"""What a condition may cost, estimated as Kubernetes does for CEL: every step of the expression
counts one, a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) counts its body once
per element of what it ranges over, `in` and equality of collections count their size, and string
functions count a tenth per character. Sizes are known for literals; anything read from a twin is
at most `n` long, where `n` is bounded by the twin's size limit, so a cost is a polynomial in `n`.

At create time the polynomial at the largest `n` a twin can hold must stay within the limit (else
400 naming it); at evaluation time it is evaluated at the twin's own largest collection, and an
evaluation that could cost more than the budget is not run (the twin is not targeted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celpy.celparser import CELParseError, CELParser
from lark import Token, Tree

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
STRING_FUNCTIONS = frozenset(
    {"contains", "startsWith", "endsWith", "matches", "lowerAscii", "upperAscii", "replace", "split", "trim",
     "indexOf", "lastIndexOf", "substring", "charAt", "join"}
)  # fmt: skip
TWIN_VARIABLES = frozenset({"tags", "reported", "desired"})
DEVICE_ID_CHARS = 128


class Poly(tuple[float, ...]):
    """A polynomial in `n` with non-negative coefficients, lowest degree first."""

    @staticmethod
    def of(constant: float = 0.0, linear: float = 0.0) -> Poly:
        return Poly((constant, linear) if linear else (constant,))

    def __add__(self, other: Any) -> Poly:
        length = max(len(self), len(other))
        return Poly(
            tuple((self[i] if i < len(self) else 0) + (other[i] if i < len(other) else 0) for i in range(length))
        )

    def __mul__(self, other: Any) -> Poly:
        out = [0.0] * (len(self) + len(other) - 1)
        for i, a in enumerate(self):
            for j, b in enumerate(other):
                out[i + j] += a * b
        return Poly(tuple(out))

    def scale(self, factor: float) -> Poly:
        return Poly(tuple(c * factor for c in self))

    def union(self, other: Poly) -> Poly:
        """An upper bound of both (coefficient by coefficient)."""
        length = max(len(self), len(other))
        return Poly(
            tuple(max(self[i] if i < len(self) else 0, other[i] if i < len(other) else 0) for i in range(length))
        )

    @property
    def degree(self) -> int:
        return max((i for i, c in enumerate(self) if c), default=0)

    def at(self, n: float) -> float:
        return sum(c * n**i for i, c in enumerate(self))


ONE = Poly.of(1)
ZERO = Poly.of(0)
N = Poly.of(0, 1)


@dataclass(frozen=True, slots=True)
class Value:
    """What the estimate knows of a value: how long it may be (1 for a scalar) and how long its
    elements may be."""

    size: Poly = ONE
    element: Poly = ONE


TWIN_VALUE = Value(N, N)
SCALAR = Value()


@lru_cache(maxsize=1)
def _parser() -> CELParser:
    return CELParser()


def estimate(text: str) -> Poly:
    """The condition's cost as a polynomial in `n`; ValueError when it does not parse."""
    try:
        tree = _parser().parse(text)
    except CELParseError as error:
        raise ValueError(str(error)) from None
    cost, _ = _walk(tree, {})
    return cost


def largest_collection(values: Iterable[Any]) -> int:
    """The longest list, map or string (by half its length: what a list of it could hold) in
    `values`, at any depth: the `n` a twin's variables give."""
    largest = 0
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            largest = max(largest, len(value))
            stack.extend(value.values())
        elif isinstance(value, list):
            largest = max(largest, len(value))
            stack.extend(value)
        elif isinstance(value, str):
            largest = max(largest, len(value) // 2)
    return largest


def _children(node: Tree[Any]) -> list[Any]:
    return [c for c in node.children if c is not None]


def _walk(node: Any, scope: Mapping[str, Value]) -> tuple[Poly, Value]:
    """(cost, value) of one parse-tree node with comprehension variables `scope`."""
    if isinstance(node, Token):
        return ZERO, SCALAR
    kind = node.data
    children = _children(node)
    if kind == "literal":
        text = str(children[0]) if children else ""
        return ONE, Value(Poly.of(max(1, len(text)))) if text[:1] in "\"'rRbB" else SCALAR
    if kind == "ident":
        name = str(children[0])
        if name in scope:
            return ONE, scope[name]
        if name in TWIN_VARIABLES:
            return ONE, TWIN_VALUE
        return ONE, Value(Poly.of(DEVICE_ID_CHARS)) if name == "deviceId" else SCALAR
    if kind == "member_dot":
        cost, base = _walk(children[0], scope)
        return cost + ONE, Value(base.element, base.element) if base.size.degree else SCALAR
    if kind == "member_index":
        base_cost, base = _walk(children[0], scope)
        index_cost, _ = _walk(children[1], scope)
        return base_cost + index_cost + ONE, Value(base.element, base.element)
    if kind == "member_dot_arg":
        return _method(children, scope)
    if kind in ("list_lit", "map_lit"):
        items = _children(children[0]) if children else []
        cost, element = ONE, ZERO
        for item in items:
            item_cost, value = _walk(item, scope)
            cost, element = cost + item_cost, element.union(value.size)
        count = len(items) // 2 if kind == "map_lit" else len(items)
        return cost, Value(Poly.of(max(count, 1)), element if items else ONE)
    if kind in ("relation", "addition"):
        return _operator(kind, children, scope)
    if kind == "expr" and len(children) == 3:  # a ? b : c
        costs = [_walk(c, scope) for c in children]
        return costs[0][0] + costs[1][0] + costs[2][0] + ONE, Value(costs[1][1].size.union(costs[2][1].size))
    if kind == "ident_arg":
        return _function(children, scope)
    cost, value = ZERO, SCALAR
    for child in children:
        child_cost, child_value = _walk(child, scope)
        cost, value = cost + child_cost, child_value
    if len(children) == 1:
        return cost, value
    return cost + ONE, SCALAR


def _operator(kind: str, children: list[Any], scope: Mapping[str, Value]) -> tuple[Poly, Value]:
    if len(children) == 1:
        return _walk(children[0], scope)
    left_cost, left = _walk(children[0].children[0], scope)  # relation_lt etc. wrap the left side
    right_cost, right = _walk(children[1], scope)
    operator = children[0].data
    cost = left_cost + right_cost + ONE
    if operator == "relation_in":
        return cost + right.size, SCALAR
    if operator in ("relation_eq", "relation_ne"):  # stops at the shorter side
        shorter = (
            right.size if not right.size.degree else left.size if not left.size.degree else left.size.union(right.size)
        )
        return cost + shorter, SCALAR
    if operator == "addition_add":
        return cost + left.size + right.size, Value(left.size + right.size, left.element.union(right.element))
    return cost, SCALAR


def _method(children: list[Any], scope: Mapping[str, Value]) -> tuple[Poly, Value]:
    receiver_cost, receiver = _walk(children[0], scope)
    name = str(children[1])
    args = _children(children[2]) if len(children) > 2 else []
    if name in MACROS and args and isinstance(args[0], Tree):
        variable = _variable(args[0])
        inner = {**scope, variable: Value(receiver.element, receiver.element)} if variable else dict(scope)
        body = ONE
        result = SCALAR
        for arg in args[1:]:
            arg_cost, arg_value = _walk(arg, inner)
            body, result = body + arg_cost, arg_value
        out = Value(receiver.size, result.size) if name in ("map", "filter") else SCALAR
        return receiver_cost + receiver.size * body, out
    cost = receiver_cost + ONE
    for arg in args:
        cost = cost + _walk(arg, scope)[0]
    if name in STRING_FUNCTIONS:
        return cost + receiver.size.scale(0.1), Value(receiver.size, receiver.size)
    return cost, SCALAR


def _function(children: list[Any], scope: Mapping[str, Value]) -> tuple[Poly, Value]:
    name = str(children[0])
    args = _children(children[1]) if len(children) > 1 else []
    cost, largest = ONE, ONE
    for arg in args:
        arg_cost, value = _walk(arg, scope)
        cost, largest = cost + arg_cost, largest.union(value.size)
    if name in STRING_FUNCTIONS or name in ("string", "size"):
        return cost + largest.scale(0.1), Value(largest) if name == "string" else SCALAR
    return cost, SCALAR


def _variable(node: Tree[Any]) -> str | None:
    """The name a comprehension binds (its first argument is a bare identifier)."""
    tokens = [t for t in node.scan_values(lambda v: isinstance(v, Token))]
    return str(tokens[0]) if len(tokens) == 1 else None

"""Who may do what: roles, principals, the rule each route declares, and the decision (pure).

Four roles, as Entra ID app roles carry them in a token's `roles` claim (or an API key holds them):
`viewer` reads; `operator` changes desired state and tags and queues commands; `release-manager`
uploads releases and runs configurations; `admin` manages devices and API keys. Every role reads,
and `admin` holds every other role too: it can mint API keys with any role, so granting it less
would only pretend. A role may be scoped by tags, `operator:region=eu` (several: `;`-separated,
`operator:region=eu;site=berlin`): the principal then reaches only twins whose tags hold those
values, and what a configuration it creates may target is narrowed to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from services.domain.errors import TwinError, bad_request, forbidden, unauthorized

_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VALUE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    RELEASE_MANAGER = "release-manager"
    ADMIN = "admin"


class Access(StrEnum):
    """How a route is reached: by anyone (probes, metrics, the API schema), only from the app's own
    sidecar (subscription deliveries), by a device with its own credentials (checked by the route),
    or by a principal holding the rule's role."""

    PUBLIC = "public"
    SIDECAR = "sidecar"
    DEVICE = "device"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    role: Role | None = None
    scoped: bool = False
    """The route acts on one device (or configuration): a scoped principal reaches it only within
    its scope, which the route checks against the resource's tags."""

    def __str__(self) -> str:
        if self.access is not Access.ROLE:
            return self.access.value
        return f"{self.role}{' (scoped)' if self.scoped else ''}"


PUBLIC = Rule(Access.PUBLIC)
SIDECAR = Rule(Access.SIDECAR)
DEVICE = Rule(Access.DEVICE)
COMMON_RULES: dict[str, Rule] = {
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /metrics": PUBLIC,
    "GET /docs": PUBLIC,
    "GET /docs/oauth2-redirect": PUBLIC,
    "GET /redoc": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /dapr/subscribe": SIDECAR,
}
"""Every app's own routes: probes and metrics (kubelet and Prometheus reach pods directly), the
API's schema, and the sidecar asking for subscriptions."""


def allow(role: Role, *, scoped: bool = False) -> Rule:
    """The rule of a route that needs `role` (scoped: it acts on one device or configuration)."""
    return Rule(Access.ROLE, role, scoped)


Scope = Mapping[str, str]
UNSCOPED: Scope = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: `subject` (a token's `sub`, an API key's id), how it proved it (`kind`: token,
    key), its roles and its tag scope (empty: the whole fleet)."""

    subject: str
    kind: str
    roles: frozenset[Role]
    scope: Scope = field(default_factory=lambda: UNSCOPED)
    name: str = ""
    """A readable name for audit (a key's name, a token's client id)."""

    def holds(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles or (role is Role.VIEWER and bool(self.roles))

    def describe(self) -> str:
        scope = f" scoped to {format_scope(self.scope)}" if self.scope else ""
        return f"{self.kind} {self.subject} ({', '.join(sorted(self.roles)) or 'no role'}{scope})"


def decide(rule: Rule, principal: Principal | None, authentication_error: str = "") -> None:
    """Raise 401 (no or bad credentials, saying what is wrong) or 403 (the principal lacks the
    rule's role, saying which it needs and which it has); return when the call may go on."""
    if rule.access is not Access.ROLE or rule.role is None:
        return
    if principal is None:
        raise unauthorized(
            authentication_error
            or f"authentication required: send `Authorization: Bearer <token or API key>` (role {rule.role})"
        )
    if not principal.holds(rule.role):
        raise forbidden(f"role {rule.role} required; {principal.describe()} does not hold it")


def parse_roles(values: Iterable[Any]) -> tuple[frozenset[Role], Scope]:
    """Roles from a token's claim or a key's record: known role names, each optionally scoped
    (`operator:region=eu`). Unknown names are ignored (a token may carry other apps' roles); the
    scopes of all scoped roles must agree, else the principal is refused (400)."""
    roles: set[Role] = set()
    scopes: set[tuple[tuple[str, str], ...]] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        name, _, qualifier = value.partition(":")
        try:
            role = Role(name.strip().lower())
        except ValueError:
            continue
        roles.add(role)
        if qualifier:
            scopes.add(tuple(sorted(parse_scope(qualifier).items())))
    if len(scopes) > 1:
        raise bad_request("the roles carry different tag scopes; one principal has one scope")
    # an unscoped role next to scoped ones: the narrower scope holds for every role
    scope = dict(next(iter(scopes))) if scopes else {}
    return frozenset(roles), MappingProxyType(scope)


def parse_scope(text: str) -> dict[str, str]:
    """`region=eu;site=berlin` -> {"region": "eu", "site": "berlin"} (400 naming what is wrong)."""
    scope: dict[str, str] = {}
    for part in text.split(";"):
        tag, sep, value = part.strip().partition("=")
        if not sep or not _TAG.match(tag) or not _VALUE.match(value):
            raise bad_request(f"scope {text!r}: write TAG=VALUE[;TAG=VALUE] (tags of letters, digits, _ . -)")
        scope[tag] = value
    return scope


def format_scope(scope: Scope) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(scope.items()))


def role_names(roles: Iterable[Role], scope: Scope) -> list[str]:
    """Roles as stored or shown, each with the scope (`operator:region=eu`)."""
    suffix = f":{format_scope(scope)}" if scope else ""
    return [f"{role}{suffix}" for role in sorted(roles)]


def in_scope(tags: Mapping[str, Any] | None, scope: Scope) -> bool:
    """Whether a twin with `tags` is within `scope` (every scope tag has the scope's value)."""
    return all((tags or {}).get(tag) == value for tag, value in scope.items())


def check_in_scope(what: str, tags: Mapping[str, Any] | None, scope: Scope) -> None:
    """403 unless a twin with `tags` is within `scope`."""
    if not in_scope(tags, scope):
        raise forbidden(f"{what} is outside your scope {format_scope(scope)}")


def covers(outer: Scope, inner: Scope) -> bool:
    """Whether everything within `inner` is within `outer` (`outer`'s tags all pinned alike)."""
    return all(inner.get(tag) == value for tag, value in outer.items())


def refusal(error: TwinError) -> bool:
    """Whether an error is an authentication or authorization refusal."""
    return int(error.code) in (401, 403)


def check_role_names(values: Iterable[str]) -> list[str]:
    """Roles as a key may be given them: known names, each optionally scoped (400 naming an
    unknown one); returned normalised (`operator:region=eu`)."""
    names: list[str] = []
    for value in values:
        name, sep, qualifier = value.strip().partition(":")
        try:
            role = Role(name.lower())
        except ValueError:
            raise bad_request(f"unknown role {name!r}; roles are {', '.join(Role)}") from None
        names.append(f"{role}:{format_scope(parse_scope(qualifier))}" if sep else str(role))
    parse_roles(names)
    return names


def key_state(expires_at: int, revoked_at: int | None, now: float) -> Literal["active", "expired", "revoked"]:
    """`revoked`, `expired` or `active`."""
    if revoked_at is not None:
        return "revoked"
    return "expired" if expires_at <= now else "active"

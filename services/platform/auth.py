"""Authentication and authorization of every app, in one place: an ASGI guard in front of each app
that finds the route's rule (`services.domain.access`), checks the sidecar's app token, takes the
caller's credentials (an OIDC bearer JWT checked against the issuer's keys, or an API key checked
against its stored hash), refuses with 401/403 saying what is missing, and records every
state-changing call on the audit topic.

Rules are declared per app (`<app>/access.py`: one per route, "METHOD /path"); a route without
one is refused for everyone (and the route-by-role test fails), so nothing is open by mistake.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import jwt
import structlog
import svcs
from fastapi import Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts
from prometheus_client import Counter
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contracts.access import API_KEY_PREFIX, AUDIT_TOPIC, ApiKeyRecord, AuditRecorded, Outcome
from services.domain.access import (
    COMMON_RULES,
    Access,
    Principal,
    Rule,
    check_in_scope,
    decide,
    parse_roles,
    role_names,
)
from services.domain.errors import TwinError, forbidden, unauthorized
from services.platform.names import AUTH_STORE
from services.platform.responses import check_app_token, header, refuse, route_template
from services.platform.settings import Settings

if TYPE_CHECKING:  # the Dapr SDK client is made lazily, by the apps that publish audit records
    from services.platform.sidecar import Sidecar
    from services.platform.state import StateRepository

log = structlog.get_logger()
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED = Counter("audit_records_total", "Audit records published", ["outcome"])
AUDIT_LOST = Counter("audit_publish_failures_total", "Audit records the sidecar did not take")
REFUSALS = Counter("auth_refusals_total", "Calls refused", ["status"])


def api_key_key(key_id: str) -> str:
    return f"apikey~{key_id}"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- tokens -----------------------------------------------------------------------------------------
class Jwks:
    """The issuer's signing keys, cached; fetched again on a `kid` it does not know (a rotated key)
    and after `max_age` seconds regardless. Fetches on unknown kids are at most one per
    `min_refresh` seconds (a flood of forged kids cannot hammer the issuer): a call that meets the
    limit waits for the next fetch instead of being refused."""

    def __init__(self, url: str, issuer: str = "", min_refresh: float = 1.0, max_age: float = 300.0) -> None:
        self._url = url
        self._issuer = issuer
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._min_refresh = min_refresh
        self._max_age = max_age
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if time.monotonic() - self._fetched > self._max_age:
            await self._refresh()
        found = self._find(kid)
        if found is None:  # a rotated key, or a forged kid: fetch again, at most once per min_refresh
            seen = self._fetched
            await asyncio.sleep(max(0.0, seen + self._min_refresh - time.monotonic()))
            if self._fetched == seen:
                await self._refresh()
            found = self._find(kid)
        if found is None:
            raise unauthorized(f"the token's signing key {kid!r} is not one of the issuer's keys")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                document = await self._fetch()
            except (httpx.HTTPError, OSError, ValueError) as error:
                log.warning("issuer keys not fetched", url=self._url or self._issuer, error=repr(error))
                self._fetched = time.monotonic()
                return
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                try:
                    key = jwt.PyJWK(entry)
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # an encryption key or an algorithm we do not take
                if entry.get("use", "sig") == "sig":
                    keys[str(entry.get("kid", ""))] = key
            self._keys, self._fetched = keys, time.monotonic()

    async def _fetch(self) -> dict[str, Any]:
        if not self._url:
            discovery = f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"
            self._url = str((await _get_json(discovery))["jwks_uri"])
        return await _get_json(self._url)


async def _get_json(url: str) -> dict[str, Any]:
    if url.startswith("file://"):
        text = await asyncio.to_thread(Path(url.removeprefix("file://")).read_text)
        return dict(json.loads(text))
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(url)
        response.raise_for_status()
        return dict(response.json())


_TOKEN_ERRORS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired; get a new one"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf/iat in the future)"),
    (jwt.InvalidAudienceError, "the token is not meant for this API (aud must hold {audience!r})"),
    (jwt.InvalidIssuerError, "the token is not from the trusted issuer {issuer!r}"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim ({error})"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
]


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature and claims were checked: by which key, for whom, and from when
    until when (leeway included) it stands."""

    kid: str | None
    key: jwt.PyJWK
    principal: Principal
    valid_from: float
    valid_until: float


VERIFIED_TOKENS = 1024
"""Tokens a verifier remembers as verified (a caller sends the same token until it expires)."""


class TokenVerifier:
    """Bearer JWTs: signature by one of the issuer's keys (an accepted asymmetric algorithm, never
    `none`), `iss` exactly the issuer, `aud` holding the audience, `exp`/`nbf` within leeway.

    A token that passed is remembered (the last `VERIFIED_TOKENS`, by its exact text) so its next
    calls skip the signature check (≈ 0.35 ms each): it stands while its times do, and only while
    the issuer's keys still hold the very key it was checked with — a refetch of the keys (a
    rotation, or `Jwks.max_age`) makes every remembered token check again, so a withdrawn key stops
    its tokens at once."""

    def __init__(self, settings: Settings, jwks: Jwks | None = None, remembered: int = VERIFIED_TOKENS) -> None:
        self.issuer = settings.auth_issuer
        self.audience = settings.auth_audience
        self.algorithms = list(settings.auth_algorithms)
        self.leeway = settings.auth_leeway_seconds
        self.roles_claim = settings.auth_roles_claim
        self.jwks = jwks or Jwks(settings.auth_jwks_url, settings.auth_issuer)
        self._verified: dict[str, _Verified] = {}
        self._remembered = remembered

    async def verify(self, token: str) -> Principal:
        if not self.issuer:
            raise unauthorized("this app takes no tokens (no issuer configured); use an API key")
        known = self._verified.get(token)
        if known is not None:
            if known.valid_from <= time.time() < known.valid_until and await self.jwks.key(known.kid) is known.key:
                return known.principal
            self._verified.pop(token, None)  # checked in full again: a refusal says why
        try:
            jose = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise unauthorized("the bearer token is neither a JWT nor an API key") from None
        algorithm = jose.get("alg")
        if algorithm not in self.algorithms:
            raise unauthorized(f"token algorithm {algorithm!r} is not accepted (only {', '.join(self.algorithms)})")
        kid = jose.get("kid")
        key = await self.jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise unauthorized(self._explain(error)) from None
        principal = self.principal(claims)
        self._remember(token, _Verified(kid, key, principal, *self._validity(claims)))
        return principal

    def _validity(self, claims: Mapping[str, Any]) -> tuple[float, float]:
        """From when until when the claims stand, as `jwt.decode` judges them (leeway included):
        from `nbf`/`iat` on, until before `exp`."""
        starts = [float(claims[name]) for name in ("nbf", "iat") if isinstance(claims.get(name), int | float)]
        return max(starts, default=0.0) - self.leeway, float(claims["exp"]) + self.leeway

    def _remember(self, token: str, verified: _Verified) -> None:
        if self._remembered <= 0:
            return
        if token not in self._verified and len(self._verified) >= self._remembered:
            self._verified.pop(next(iter(self._verified)))  # the oldest goes
        self._verified[token] = verified

    def _explain(self, error: Exception) -> str:
        for kind, text in _TOKEN_ERRORS:
            if isinstance(error, kind):
                return text.format(audience=self.audience, issuer=self.issuer, error=error)
        return f"the token is malformed: {error}"

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        raw = claims.get(self.roles_claim, [])
        values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles, scope = parse_roles(values)
        name = str(claims.get("client_id") or claims.get("azp") or claims.get("preferred_username") or "")
        return Principal(str(claims["sub"]), "token", roles, scope, name)


class ApiKeyVerifier:
    """API keys (`tfk_<id>_<secret>`): the stored record's hash, expiry and revocation, read on
    every call (no cache), so a revoked key stops working at once."""

    def __init__(self, repository: StateRepository) -> None:
        self._repository = repository

    async def verify(self, key: str) -> Principal:
        key_id, sep, secret = key.removeprefix(API_KEY_PREFIX).partition("_")
        if not sep or not key_id.isalnum() or not key_id.isascii() or len(key_id) > 32 or not secret:
            raise unauthorized("malformed API key")
        stored = await self._repository.get(api_key_key(key_id))
        if stored.value is None:
            raise unauthorized("unknown API key")
        record = ApiKeyRecord.model_validate(stored.value)
        if not hmac.compare_digest(record.secret_sha256, secret_digest(secret)):
            raise unauthorized("unknown API key")
        if record.revoked_at is not None:
            raise unauthorized(f"API key {record.id} was revoked")
        if record.expires_at <= time.time():
            raise unauthorized(f"API key {record.id} expired; create a new one")
        roles, scope = parse_roles(record.roles)
        return Principal(record.id, "key", roles, scope, record.name)


class Authenticator:
    """Who sent `Authorization: Bearer …` (a JWT or an API key); 401 saying what is wrong."""

    def __init__(self, tokens: TokenVerifier, keys: ApiKeyVerifier) -> None:
        self.tokens = tokens
        self.keys = keys

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("authentication required: send `Authorization: Bearer <token or API key>`")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise unauthorized("the Authorization header must be `Bearer <token or API key>`")
        credential = credential.strip()
        if credential.startswith(API_KEY_PREFIX):
            return await self.keys.verify(credential)
        return await self.tokens.verify(credential)


# -- the policy and the guard -----------------------------------------------------------------------
class AccessPolicy:
    """Each route's rule, by `"METHOD /path/template"` (the app's own routes and `COMMON_RULES`)."""

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self.rules = {**COMMON_RULES, **rules}

    def rule(self, method: str, path: str) -> Rule | None:
        found = self.rules.get(f"{method} {path}")
        if found is None and method == "HEAD":
            found = self.rules.get(f"GET {path}")
        return found

    def routes_without_rules(self, app: FastAPI) -> list[str]:
        return [f"{m} {p}" for m, p in app_routes(app) if self.rule(m, p) is None]

    def rules_without_routes(self, app: FastAPI) -> list[str]:
        known = {f"{m} {p}" for m, p in app_routes(app)}
        return [r for r in self.rules if r not in known and r not in COMMON_RULES]


def flat_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route `app` serves, included routers flattened (full paths)."""
    return list(iter_route_contexts(app.router.routes))  # type: ignore[arg-type]


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route `app` serves."""
    found = []
    for route in flat_routes(app):
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD" and path is not None:
                found.append((method, path))
    return found


class Guard:
    """The ASGI layer that applies the policy to every request (installed by `install_common`)."""

    def __init__(self, app: ASGIApp, api: FastAPI, policy: AccessPolicy, app_name: str, settings: Settings) -> None:
        self.app = app
        self.api = api
        self.policy = policy
        self.app_name = app_name
        self.app_token = settings.app_api_token.encode()
        self.settings = settings
        self._authenticator: Authenticator | None = None
        self._sidecar: Sidecar | None = None
        self._routes: list[BaseRoute] | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        if self._routes is None:
            self._routes = flat_routes(self.api)
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.time()  # the audit record's time: when the call came in, not when it ended
        method, template = scope["method"], route_template(self.routes, scope)
        if template is None:  # no such route: FastAPI answers 404/405
            await self.app(scope, receive, send)
            return
        rule = self.policy.rule(method, template)
        principal: Principal | None = None
        try:
            if rule is None:
                raise forbidden(f"{method} {template} has no access rule, so nobody may call it")
            if rule.access in (Access.SIDECAR, Access.ROLE):
                check_app_token(scope, self.app_token)
            if rule.access is Access.ROLE:
                principal, why = await self._authenticate(scope)
                decide(rule, principal, why)
        except TwinError as error:
            REFUSALS.labels(str(int(error.code))).inc()
            await refuse(send, error)
            if method in WRITES and (rule is None or rule.access is Access.ROLE):
                await self._audit(scope, template, principal, int(error.code), error.message, arrived)
            return
        scope.setdefault("state", {})["principal"] = principal
        if method not in WRITES or rule is None or rule.access not in (Access.ROLE, Access.DEVICE):
            await self.app(scope, receive, send)
            return
        status, message = await _observed(self.app, scope, receive, send)
        await self._audit(scope, template, principal, status, message, arrived)

    async def _authenticate(self, scope: Scope) -> tuple[Principal | None, str]:
        """The caller, or None and why not (a 401's message)."""
        try:
            return await (await self.authenticator()).principal(header(scope, b"authorization")), ""
        except TwinError as error:
            if int(error.code) != 401:
                raise
            return None, error.message

    async def sidecar(self) -> Sidecar:
        from services.platform.sidecar import Sidecar  # imported when first used: see TYPE_CHECKING

        if self._sidecar is None:
            async with svcs.Container(svcs.fastapi.get_registry(self.api)) as services:
                self._sidecar = await services.aget(Sidecar)
        return self._sidecar

    async def authenticator(self) -> Authenticator:
        if self._authenticator is None:
            from services.platform.state import StateRepository

            keys = ApiKeyVerifier(StateRepository(await self.sidecar(), store=AUTH_STORE))
            self._authenticator = Authenticator(TokenVerifier(self.settings), keys)
        return self._authenticator

    async def _audit(
        self, scope: Scope, template: str, principal: Principal | None, status: int, message: str, at: float
    ) -> None:
        outcome: Outcome = "allowed" if status < 400 else "refused" if status in (401, 403) else "failed"
        params = _path_params(self.routes, scope)
        client = scope.get("client")
        record = AuditRecorded(
            id=uuid.uuid4().hex,
            at=at,
            app=self.app_name,
            actor=principal.subject if principal else "anonymous",
            actor_kind=principal.kind if principal else "none",
            roles=role_names(principal.roles, principal.scope) if principal else [],
            method=scope["method"],
            path=scope["path"],
            route=template,
            target=params.get("device_id") or params.get("configuration_id") or params.get("artifact_id") or "",
            status=status,
            outcome=outcome,
            message=message[:300],
            source=header(scope, b"x-forwarded-for") or (client[0] if client else ""),
            caller_app=header(scope, b"dapr-caller-app-id") or "",
        )
        try:
            sidecar = await self.sidecar()
            await sidecar.publish_events(AUDIT_TOPIC, [record.model_dump_json()])
            AUDITED.labels(outcome).inc()
        except Exception as error:  # noqa: BLE001 - the call itself is done; the loss is counted and logged
            AUDIT_LOST.inc()
            log.warning("audit record not published", record=record.model_dump(mode="json"), error=repr(error))


def _path_params(routes: list[BaseRoute], scope: Scope) -> dict[str, str]:
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return {k: str(v) for k, v in child.get("path_params", {}).items()}
    return {}


async def _observed(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> tuple[int, str]:
    """Run the app, noting the status it answered and (for a refusal) its message."""
    status = 500
    body = bytearray()

    async def watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and status >= 400 and len(body) < 4096:
            body.extend(message.get("body", b""))
        await send(message)

    await app(scope, receive, watch)
    message = ""
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = body[:300].decode(errors="replace")
    return status, message


# -- what routes use --------------------------------------------------------------------------------
async def _caller(request: Request) -> Principal:
    """A coroutine although it awaits nothing: FastAPI runs a plain function dependency in a worker
    thread, a thread hop on every request that names `Caller`."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise unauthorized("authentication required")
    return principal


Caller = Annotated[Principal, Depends(_caller)]
"""The authenticated principal of a role route (a route's typed dependency)."""

TagsOf = Callable[[str], Awaitable[Mapping[str, Any] | None]]


class DeviceTags:
    """How an app that keeps no twins learns a device's tags (to check a scoped caller): the
    twin-store's answer, through its typed client."""

    def __init__(self, tags_of: TagsOf) -> None:
        self.tags_of = tags_of

    async def check(self, principal: Principal, device_id: str) -> None:
        """403 unless the device is within the principal's scope (nothing to look up if unscoped)."""
        if principal.scope:
            check_in_scope(f"device {device_id}", await self.tags_of(device_id), principal.scope)


async def _device_in_scope(request: Request, device_id: str, services: svcs.fastapi.DepContainer) -> None:
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal) and principal.scope:
        await (await services.aget(DeviceTags)).check(principal, device_id)


DeviceInScope = Depends(_device_in_scope)
"""A router dependency of device routes in apps that keep no twins: 403 for a scoped caller when
the path's device is outside its scope."""

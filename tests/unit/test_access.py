"""Access in the pure core and the per-app rules: every route of every app has a rule, roles
decide 401/403 with a message, scopes narrow what a principal reaches and what it may target."""

from __future__ import annotations

import importlib

import pytest
from fastapi import FastAPI

from services.contracts.rollout import ConfigurationSpec
from services.domain.access import (
    Access,
    Principal,
    Role,
    check_role_names,
    covers,
    decide,
    in_scope,
    parse_roles,
)
from services.domain.errors import TwinError
from services.domain.rollout.configuration import CompiledConfiguration, new_configuration
from services.domain.rollout.twin_plan import evaluate_twin
from services.platform.auth import AccessPolicy, app_routes

APPS = ["twin_store", "delta", "events", "commands", "rollout", "firmware", "device_agent"]


def served(app: str) -> tuple[FastAPI, AccessPolicy]:
    main = importlib.import_module(f"services.{app}.main")
    rules = importlib.import_module(f"services.{app}.access").RULES
    return getattr(main, "api", main.app), AccessPolicy(rules)


@pytest.mark.parametrize("app", APPS)
def test_every_route_of_every_app_has_exactly_one_rule(app: str) -> None:
    api, policy = served(app)
    assert policy.routes_without_rules(api) == [], "a new route needs its rule in access.py"
    assert policy.rules_without_routes(api) == [], "a rule names a route the app does not serve"
    assert app_routes(api)


def principal(*roles: str) -> Principal:
    parsed, scope = parse_roles(roles)
    return Principal("someone", "token", parsed, scope)


@pytest.mark.parametrize(
    ("needed", "holder", "allowed"),
    [
        (Role.VIEWER, "viewer", True),
        (Role.VIEWER, "operator", True),
        (Role.VIEWER, "release-manager", True),
        (Role.OPERATOR, "viewer", False),
        (Role.OPERATOR, "release-manager", False),
        (Role.RELEASE_MANAGER, "operator", False),
        (Role.RELEASE_MANAGER, "release-manager", True),
        (Role.ADMIN, "operator", False),
        (Role.ADMIN, "admin", True),
        (Role.OPERATOR, "admin", True),
        (Role.VIEWER, "something-else", False),
    ],
)
def test_each_role_holds_exactly_its_operations(needed: Role, holder: str, allowed: bool) -> None:
    rule = next(r for r in [__import__("services.domain.access", fromlist=["allow"]).allow(needed)])
    if allowed:
        decide(rule, principal(holder))
    else:
        with pytest.raises(TwinError) as refused:
            decide(rule, principal(holder))
        assert int(refused.value.code) == 403 and str(needed) in refused.value.message


def test_no_credentials_is_401_saying_what_to_send() -> None:
    from services.domain.access import allow

    with pytest.raises(TwinError) as refused:
        decide(allow(Role.VIEWER), None)
    assert int(refused.value.code) == 401 and "Authorization: Bearer" in refused.value.message
    decide(Access and __import__("services.domain.access", fromlist=["PUBLIC"]).PUBLIC, None)


def test_scoped_roles_and_what_they_reach() -> None:
    roles, scope = parse_roles(["operator:region=eu", "viewer", "Other.App.Role"])
    assert roles == {Role.OPERATOR, Role.VIEWER} and dict(scope) == {"region": "eu"}
    assert in_scope({"region": "eu", "site": "x"}, scope) and not in_scope({"region": "us"}, scope)
    assert not in_scope(None, scope) and in_scope({}, {})
    assert covers(scope, {"region": "eu", "site": "x"}) and not covers(scope, {})
    with pytest.raises(TwinError):
        parse_roles(["operator:region=eu", "viewer:region=us"])
    with pytest.raises(TwinError):
        check_role_names(["superuser"])
    assert check_role_names(["Operator:site=b;region=eu"]) == ["operator:region=eu;site=b"]


def test_a_scoped_configuration_never_targets_a_twin_outside_its_scope() -> None:
    spec = ConfigurationSpec(id="eu-only", target_condition='tags.ring == "canary" || true', content={"a": 1})
    compiled = CompiledConfiguration(new_configuration(spec, 0, {"region": "eu"}))
    inside = evaluate_twin("d1", 1, {"region": "eu"}, {}, {}, {}, [compiled])
    outside = evaluate_twin("d2", 1, {"region": "us", "ring": "canary"}, {}, {}, {}, [compiled])
    untagged = evaluate_twin("d3", 1, {}, {}, {}, {}, [compiled])
    assert inside.hits["eu-only"].targeted
    assert "eu-only" not in outside.hits and "eu-only" not in untagged.hits


def test_a_route_without_a_rule_is_refused_to_everyone_and_the_app_token_is_checked() -> None:
    from fastapi.testclient import TestClient

    from services.domain.access import SIDECAR
    from services.platform.http import install_common
    from services.platform.settings import Settings

    app = FastAPI()
    install_common(app, {"POST /deliveries": SIDECAR}, "test", Settings(APP_API_TOKEN="app-secret"))

    @app.post("/deliveries")
    async def deliveries() -> dict[str, str]:
        return {"status": "SUCCESS"}

    @app.post("/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"status": "open"}

    with TestClient(app) as client:
        sidecar = {"dapr-api-token": "app-secret"}
        assert client.post("/deliveries", headers=sidecar).json() == {"status": "SUCCESS"}
        bypass = client.post("/deliveries", headers={"dapr-api-token": "guess"})
        assert bypass.status_code == 401 and "sidecar" in bypass.json()["message"]
        refused = client.post("/forgotten", headers=sidecar)
        assert refused.status_code == 403 and "no access rule" in refused.json()["message"]
        unknown = client.get("/nothing-here")
        assert unknown.status_code == 404 and unknown.json() == {"code": 404, "message": "Not Found"}
        assert client.get("/healthz").status_code == 200

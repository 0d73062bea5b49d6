"""Bearer tokens as every app checks them: signature by one of the issuer's keys (refetched on an
unknown kid), issuer, audience, expiry and not-before; unsigned and tampered tokens refused."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from services.devtools.identity import LocalIssuer
from services.domain.access import Role
from services.domain.errors import TwinError
from services.platform.auth import Jwks, TokenVerifier
from services.platform.settings import Settings


def verifier(issuer: LocalIssuer) -> TokenVerifier:
    settings = Settings(auth_issuer=issuer.issuer, auth_jwks_url=f"file://{issuer.jwks_file}")
    return TokenVerifier(settings, Jwks(settings.auth_jwks_url, min_refresh=0))


async def refused(check: TokenVerifier, token: str) -> str:
    with pytest.raises(TwinError) as error:
        await check.verify(token)
    assert int(error.value.code) == 401
    return error.value.message


async def test_a_good_token_gives_its_roles_and_scope(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path)
    principal = await verifier(issuer).verify(issuer.token("ci", ["operator:region=eu", "viewer"]))
    assert principal.roles == {Role.OPERATOR, Role.VIEWER} and dict(principal.scope) == {"region": "eu"}
    assert principal.subject == "ci" and principal.kind == "token"


async def test_expired_wrong_audience_wrong_issuer_unsigned_and_tampered_tokens_are_refused(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path)
    check = verifier(issuer)
    assert "expired" in await refused(check, issuer.token("x", ["admin"], ttl=-120))
    good = jwt.decode(issuer.token("x", ["viewer"]), options={"verify_signature": False})
    key = issuer._key
    headers = {"kid": issuer.kid}
    wrong_aud = jwt.encode({**good, "aud": ["other"]}, key, algorithm="ES256", headers=headers)
    assert "not meant for this API" in await refused(check, wrong_aud)
    wrong_iss = jwt.encode({**good, "iss": "https://elsewhere/"}, key, algorithm="ES256", headers=headers)
    assert "trusted issuer" in await refused(check, wrong_iss)
    future = jwt.encode({**good, "nbf": int(time.time()) + 3600}, key, algorithm="ES256", headers=headers)
    assert "not valid yet" in await refused(check, future)
    unsigned = jwt.encode({**good, "roles": ["admin"]}, None, algorithm="none")
    assert "'none' is not accepted" in await refused(check, unsigned)
    head, body, signature = issuer.token("x", ["viewer"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "roles": ["admin"]}).encode()).rstrip(b"=").decode()
    assert "signature does not verify" in await refused(check, f"{head}.{forged}.{signature}")
    hmac_token = jwt.encode(good, "secret-guessed", algorithm="HS256", headers=headers)
    assert "not accepted" in await refused(check, hmac_token)
    assert "neither a JWT" in await refused(check, "not-a-token")


async def test_a_rotated_key_is_fetched_on_its_unknown_kid(tmp_path: Path) -> None:
    first = LocalIssuer(tmp_path)
    check = verifier(first)
    await check.verify(first.token("x", ["viewer"]))
    (tmp_path / "issuer-key.pem").unlink()
    rotated = LocalIssuer(tmp_path)  # a new key under the same issuer name, a new kid, new JWKS file
    assert rotated.kid != first.kid
    assert (await check.verify(rotated.token("y", ["viewer"]))).subject == "y"


async def test_a_verified_token_is_not_checked_again_until_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = LocalIssuer(tmp_path)
    settings = Settings(auth_issuer=issuer.issuer, auth_jwks_url=f"file://{issuer.jwks_file}", auth_leeway_seconds=0)
    check = TokenVerifier(settings, Jwks(settings.auth_jwks_url, min_refresh=0), remembered=2)
    first, second, third = (issuer.token(name, ["viewer"], ttl=2) for name in ("a", "b", "c"))
    await check.verify(first)
    checked: list[str] = []
    decode = jwt.decode

    def counted(token: str, *args: object, **kwargs: object) -> object:
        checked.append(token)
        return decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counted)
    assert (await check.verify(first)).subject == "a" and checked == []  # remembered
    await check.verify(second)
    await check.verify(third)  # the third pushes the oldest out
    assert (await check.verify(first)).subject == "a" and checked == [second, third, first]
    expires = jwt.decode(first, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    assert "expired" in await refused(check, first)  # a remembered token expires as any other


async def test_a_remembered_token_stops_with_the_key_that_signed_it(tmp_path: Path) -> None:
    first = LocalIssuer(tmp_path)
    settings = Settings(auth_issuer=first.issuer, auth_jwks_url=f"file://{first.jwks_file}")
    check = TokenVerifier(settings, Jwks(settings.auth_jwks_url, min_refresh=0, max_age=0))
    token = first.token("x", ["admin"])
    assert (await check.verify(token)).subject == "x"
    (tmp_path / "issuer-key.pem").unlink()
    LocalIssuer(tmp_path)  # the issuer's keys now hold only a new one: the old key is withdrawn
    assert "not one of the issuer's keys" in await refused(check, token)

"""Sign-in for browsers: the operator's client credentials (the same ones `twin login` takes) are
exchanged at the issuer's token endpoint by the console, or a token / API key is handed over; the
credential is checked like any call's, then kept in an HttpOnly, SameSite=Strict cookie that the
console turns back into `Authorization: Bearer …` for its own guard and for every call it
forwards. Scripts in the page never see the credential; a write sent with the cookie must carry
`X-Twinfleet-Console` (a header no other site's page can send without a CORS preflight)."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from services.clients.credentials import ClientCredentials, CredentialError, fetch_token
from services.contracts.console import SessionView, SignIn
from services.domain.access import Principal, role_names
from services.domain.errors import bad_request, forbidden, unauthorized
from services.platform.auth import WRITES, Authenticator
from services.platform.responses import refuse

COOKIE = "twinfleet_session"
CSRF_HEADER = b"x-twinfleet-console"
KEY_SESSION_SECONDS = 8 * 3600
"""How long a session signed in with an API key lasts (the key's own expiry still applies)."""


async def sign_in(body: SignIn, authenticator: Authenticator, token_url: str, audience: str) -> tuple[str, SessionView]:
    """(the bearer to keep, who it is); 400 for a body that is neither form, 401 when refused."""
    if body.token:
        bearer = body.token
    elif body.client_id and body.client_secret:
        if not token_url:
            raise bad_request("this console exchanges no client credentials (no token endpoint); sign in with a token")
        try:
            bearer, _ = await fetch_token(ClientCredentials(token_url, body.client_id, body.client_secret, audience))
        except CredentialError as error:
            raise unauthorized(f"the issuer refused these client credentials: {error}") from None
    else:
        raise bad_request("send clientId and clientSecret, or a token (or API key)")
    principal = await authenticator.principal(f"Bearer {bearer}")
    return bearer, session_view(principal, bearer)


def session_view(principal: Principal, bearer: str) -> SessionView:
    return SessionView(
        subject=principal.subject,
        name=principal.name,
        kind=principal.kind,
        roles=role_names(principal.roles, principal.scope),
        expires_at=expiry(bearer),
    )


def expiry(bearer: str) -> int:
    """When the session ends: the token's `exp` (already verified), or a fixed span for a key."""
    try:
        claims = jwt.decode(bearer, options={"verify_signature": False})
        return int(claims["exp"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return int(time.time()) + KEY_SESSION_SECONDS


def set_cookie_header(bearer: str, expires_at: int, secure: bool) -> str:
    max_age = max(0, expires_at - int(time.time()))
    flags = f"; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return f"{COOKIE}={bearer}{flags}"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


class SessionCookie:
    """ASGI layer in front of the guard: a request without `Authorization` that carries the
    session cookie is sent on with the cookie's bearer; a write so authenticated needs the
    console's header (else 403, nothing done)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope["headers"])
        names = {key for key, _ in headers}
        bearer = _cookie(headers)
        if bearer and b"authorization" not in names:
            if scope["method"] in WRITES and CSRF_HEADER not in names and scope["path"] != "/v1/console/session":
                await refuse(send, forbidden("a write with the console's session needs the X-Twinfleet-Console header"))
                return
            headers.append((b"authorization", f"Bearer {bearer}".encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def _cookie(headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except ValueError:
                continue
            if COOKIE in jar and jar[COOKIE].value:
                return jar[COOKIE].value
    return ""

"""Credentials a caller sends: a static bearer (a token or an API key from a file or the
environment), or OAuth2 client credentials fetched from the issuer's token endpoint and renewed
before they expire (what an app's own identity and `twin login --client-id` use)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx

from services.platform.settings import Settings

RENEW_BEFORE_SECONDS = 60.0


class CredentialError(Exception):
    """The issuer refused the client credentials (or did not answer)."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    audience: str = "twinfleet"
    scope: str = ""


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer …` on every request: a fixed value, or a client-credentials token
    fetched when first needed and renewed a minute before it expires."""

    def __init__(self, token: str = "", client: ClientCredentials | None = None) -> None:
        self._token = token
        self._client = client
        self._expires = float("inf") if token else 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._client is None or time.time() < self._expires - RENEW_BEFORE_SECONDS:
            return self._token
        async with self._lock:
            if time.time() >= self._expires - RENEW_BEFORE_SECONDS:
                self._token, self._expires = await fetch_token(self._client)
        return self._token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request

    @property
    def configured(self) -> bool:
        return bool(self._token or self._client)


async def fetch_token(client: ClientCredentials) -> tuple[str, float]:
    """One client-credentials grant (RFC 6749 §4.4, client_secret_basic): the access token and when
    it expires; `CredentialError` saying what the issuer answered otherwise."""
    form = {"grant_type": "client_credentials", "audience": client.audience}
    if client.scope:
        form["scope"] = client.scope
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(client.token_url, data=form, auth=(client.client_id, client.client_secret))
    except httpx.HTTPError as error:
        raise CredentialError(f"token endpoint {client.token_url} unreachable: {error!r}") from error
    if response.status_code != 200:
        raise CredentialError(f"token endpoint refused client {client.client_id}: {response.text[:300]}")
    body = response.json()
    return str(body["access_token"]), time.time() + float(body.get("expires_in", 300))


def service_auth(settings: Settings) -> BearerAuth:
    """This app's own identity when it calls another app: client credentials when configured
    (clusters), else the static `service_token` (local stacks), else none."""
    if settings.auth_client_id and settings.auth_token_url:
        client = ClientCredentials(
            settings.auth_token_url, settings.auth_client_id, settings.auth_client_secret, settings.auth_audience
        )
        return BearerAuth(client=client)
    return BearerAuth(settings.service_token)

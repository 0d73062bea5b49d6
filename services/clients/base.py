"""What every client shares: where an app is reached, and what a refusal looks like."""

from __future__ import annotations

from typing import Any, Self

import httpx

from services.domain.json_values import fast_dumps, fast_loads


def app_url(app: str, dapr_http_port: int, direct_url: str = "") -> str:
    """Where to call another app: through this app's sidecar (Dapr service invocation), or straight
    to `direct_url` when one is set (local stacks: daprd's mDNS resolution spans the machine)."""
    return direct_url.rstrip("/") or f"http://127.0.0.1:{dapr_http_port}/v1.0/invoke/{app}/method"


class ApiError(Exception):
    """The app refused the call (`status`, and its `message` saying what to fix)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """The app (or the sidecar in between) did not answer; the caller retries."""


class ApiClient:
    """One app's REST API over httpx; a refusal raises `ApiError`, no answer `Unreachable`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers, auth=auth)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a `json=` body is written with orjson (`fast_dumps`)."""
        if "json" in kwargs:
            kwargs["content"] = fast_dumps(kwargs.pop("json"))
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Type": "application/json"}
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise Unreachable(f"{method} {path}: {error!r}") from error
        if response.status_code >= 400:
            raise ApiError(response.status_code, _message(response))
        return response


def body(response: httpx.Response) -> Any:
    """A JSON answer, parsed with orjson where it reads what the standard library would
    (`fast_loads`): the rollout app reads the fleet's pages and its batch answers with it."""
    return fast_loads(response.content)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:500]

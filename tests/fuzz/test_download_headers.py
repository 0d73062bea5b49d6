"""`Range` and credential headers tried wholesale on the download the firmware app serves itself
(a store that cannot pre-sign: chunk objects through the Dapr binding). With an object store the
device downloads from the store, whose range handling is not ours to fuzz (Azurite answers
`Range: =` with `content-length: NaN`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.devtools.stack import Stack
from tests.fuzz.conftest import TRIED
from tests.fuzz.test_rest_inputs import FUZZ, check, header_texts
from tests.support.releases import publish

pytestmark = pytest.mark.slow
STACK_ARTIFACTS = "binding"
SIZE = 3000


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers=stack.headers, timeout=15) as client:
        yield client


async def test_range_and_credential_headers_on_downloads(stack: Stack, http: httpx.Client) -> None:
    assert (await asyncio.to_thread(http.put, "/v1/twins/range-twin")).status_code == 201
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=15) as firmware:
        artifact = await publish(stack, firmware, "range-art", "1.0.0", os.urandom(SIZE))
    body = {"deviceId": "range-twin", "ttl": 600}
    answer = await asyncio.to_thread(http.post, f"/v1/artifacts/{artifact}/urls", json=body)
    assert answer.status_code == 200, answer.text
    minted = answer.json()["url"]
    assert "signature=" in minted, minted  # served by the app, not an object store

    @FUZZ
    @given(
        range_=st.one_of(
            header_texts,
            st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, SIZE + 1000), st.integers(-5, SIZE + 1000)),
            st.builds(lambda a: f"bytes=-{a}", st.integers(-5, SIZE + 2000)),
            st.just("bytes=0-1,5-6"),
            st.just("="),
        ),
        credential=st.one_of(st.none(), header_texts),
        tamper=st.booleans(),
    )
    def one(range_: str, credential: str | None, tamper: bool) -> None:
        TRIED["download Range / credential headers"] += 1
        headers = {"Range": range_}
        if credential is not None:
            headers["X-Download-Credential"] = credential
        url = minted.replace("signature=", "signature=0") if tamper else minted
        try:
            answer = httpx.get(url, headers=headers, timeout=10)
        except UnicodeEncodeError:
            return  # not sendable as an HTTP header
        check(answer, (range_, credential, tamper))
        assert answer.status_code in (200, 206, 400, 403, 416), answer.text[:200]
        if answer.status_code == 200:
            assert len(answer.content) == SIZE, (range_, len(answer.content))
        if answer.status_code == 206:
            first, last = answer.headers["content-range"].removeprefix("bytes ").split("/")[0].split("-")
            assert len(answer.content) == int(last) - int(first) + 1, (range_, answer.headers)

    await asyncio.to_thread(one)

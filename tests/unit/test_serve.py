"""`services.platform.serve`: every app's heap after startup is left out of later collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.platform.serve import frozen_after_startup


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_the_heap_is_frozen_once_startup_completes_and_not_before() -> None:
    seen_frozen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        seen_frozen.append(gc.get_freeze_count())  # during the app's own startup
        await send({"type": "lifespan.startup.complete"})
        seen_frozen.append(gc.get_freeze_count())

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await frozen_after_startup(app)({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert seen_frozen[0] == 0
    assert seen_frozen[1] > 0


async def test_a_request_reaches_the_app_as_it_came() -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "http", "path": "/"}
    await frozen_after_startup(app)(scope, receive, send)
    assert calls == [(scope, receive, send)]
    assert gc.get_freeze_count() == 0

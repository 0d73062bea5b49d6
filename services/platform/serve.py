"""`python -m services.platform.serve APP [--host H] [--port P]`: serve one of the suite's Dapr
apps, named by its app id, with the uvicorn settings every app runs with. The app image's
entrypoint (`docker run twinfleet/app:0.1.0 twin-store`), the Helm charts' argument, and how the
local stack starts each app."""

from __future__ import annotations

import argparse
import gc
import os

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.importer import import_from_string

from services.platform.names import (
    COMMANDS_APP,
    CONSOLE_APP,
    DELTA_APP,
    DEVICE_AGENT_APP,
    EVENTS_APP,
    FIRMWARE_APP,
    ROLLOUT_APP,
    TWIN_STORE_APP,
)

APPS = {
    TWIN_STORE_APP: "services.twin_store.main:app",
    DELTA_APP: "services.delta.main:app",
    EVENTS_APP: "services.events.main:app",
    COMMANDS_APP: "services.commands.main:app",
    ROLLOUT_APP: "services.rollout.main:app",
    FIRMWARE_APP: "services.firmware.main:app",
    CONSOLE_APP: "services.console.main:app",
    DEVICE_AGENT_APP: "services.device_agent.main:app",
}
"""App id -> the ASGI app (`module:attribute`)."""


def frozen_after_startup(app: ASGIApp) -> ASGIApp:
    """`app`, whose heap after its startup (imports, the lifespan's clients and registries) is left
    out of every later garbage collection (`gc.freeze`): those objects live as long as the process,
    and traversing them again on each full collection cost the twin-store and the delta app a large
    share of their CPU under load, in pauses of 50 to 200 ms (see the architecture notes, "The
    device path under load")."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def started(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.collect()
                gc.freeze()
            await send(message)

        return await app(scope, receive, started)

    return serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="twinfleet-app", description="Serve one Twinfleet app by its Dapr app id.")
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="default $HOST or 0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="default $PORT or 8000")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "warning"))
    args = parser.parse_args(argv)
    uvicorn.run(
        frozen_after_startup(import_from_string(APPS[args.app])),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()

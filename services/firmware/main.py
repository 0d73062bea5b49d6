"""firmware: the artifact broker — streamed uploads into chunk objects, signed release metadata,
and downloads only for the device an artifact is meant for, with resume."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import svcs
from fastapi import FastAPI

from services.clients.base import app_url
from services.clients.credentials import service_auth
from services.clients.rollout import RolloutClient
from services.clients.twin_store import TwinStoreClient, twin_store_client
from services.firmware.access import RULES
from services.firmware.api import artifacts, downloads_router, keys_router
from services.firmware.downloads import Downloads
from services.firmware.releases import Releases
from services.firmware.settings import FirmwareSettings, get_firmware_settings
from services.firmware.storage import Catalog, ChunkCache, FirmwareSidecar, Keys
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running_sidecar
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP


@svcs.fastapi.lifespan
async def lifespan(app: FastAPI, registry: svcs.Registry) -> AsyncGenerator[None]:
    settings = get_firmware_settings()
    sidecar = FirmwareSidecar(*settings.sidecar_args(), settings.firmware_name_key)
    port, headers, auth = settings.dapr_http_port, settings.sidecar_headers(), service_auth(settings)
    async with (
        running_sidecar(FIRMWARE_APP, sidecar),
        RolloutClient(app_url(ROLLOUT_APP, port, settings.rollout_url), headers=headers, auth=auth) as rollout,
        twin_store_client(settings) as twins,
    ):
        state = register_platform(registry, sidecar)
        cache = ChunkCache(sidecar, settings.firmware_cache_chunks)
        keys = Keys(sidecar)
        registry.register_value(FirmwareSettings, settings)
        registry.register_value(Keys, keys)
        registry.register_value(TwinStoreClient, twins)
        registry.register_value(Releases, Releases(sidecar, Catalog(state), cache, keys, rollout, settings))
        registry.register_value(Downloads, Downloads(keys, cache, settings.firmware_downloads_per_device))
        yield


app = FastAPI(title="Twinfleet firmware", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, FIRMWARE_APP)
app.include_router(artifacts)
app.include_router(downloads_router)
app.include_router(keys_router)

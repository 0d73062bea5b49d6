"""firmware: the artifact broker — streamed uploads into the store, releases published as TUF
metadata (targets signed offline, snapshot and timestamp by the suite), and download grants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import structlog
import svcs
from fastapi import FastAPI

from services.clients.base import app_url
from services.clients.credentials import service_auth
from services.clients.rollout import RolloutClient
from services.clients.twin_store import TwinStoreClient, twin_store_client
from services.firmware.access import RULES
from services.firmware.api import artifacts, downloads_router, keys_router, metadata_router
from services.firmware.downloads import Downloads
from services.firmware.releases import Releases
from services.firmware.repository import ReleaseRepository
from services.firmware.settings import FirmwareSettings, get_firmware_settings
from services.firmware.storage import Catalog, ChunkCache, FirmwareSidecar, Keys
from services.firmware.stores import ConfiguredStore
from services.platform.http import install_common
from services.platform.lifecycle import register_platform, running, running_sidecar
from services.platform.names import FIRMWARE_APP, ROLLOUT_APP

log = structlog.get_logger()


async def keep_fresh(repository: ReleaseRepository, interval: float) -> None:
    """Re-sign snapshot and timestamp before they expire, for ever."""
    while True:
        await asyncio.sleep(interval)
        try:
            await repository.refresh()
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("metadata refresh failed", error=str(error))


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
        keys = Keys(sidecar)
        store = ConfiguredStore(settings, keys, sidecar, ChunkCache(sidecar, settings.firmware_cache_chunks))
        repository = ReleaseRepository(state, keys, settings.firmware_snapshot_ttl, settings.firmware_timestamp_ttl)
        registry.register_value(FirmwareSettings, settings)
        registry.register_value(TwinStoreClient, twins)
        registry.register_value(Releases, Releases(store, Catalog(state), repository, rollout, settings))
        downloads = Downloads(keys, store, settings.firmware_downloads_per_device, settings.firmware_public_url)
        registry.register_value(Downloads, downloads)
        async with running(keep_fresh(repository, settings.firmware_metadata_refresh)):
            yield
        await store.close()


app = FastAPI(title="Twinfleet firmware", version="0.1.0", lifespan=lifespan)
install_common(app, RULES, FIRMWARE_APP)
app.include_router(artifacts)
app.include_router(metadata_router)
app.include_router(downloads_router)
app.include_router(keys_router)

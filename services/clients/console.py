"""The console's fleet index (`services.contracts.console`) and the events app's cursor as typed
clients, for the `twin fleet` and `twin events` commands."""

from __future__ import annotations

from services.clients.base import ApiClient
from services.contracts.console import FleetCounts, FleetDevicePage, RecentEventList
from services.contracts.device_events import EventCursorView


class ConsoleClient(ApiClient):
    async def fleet(self) -> FleetCounts:
        return FleetCounts.model_validate((await self.call("GET", "/v1/console/fleet")).json())

    async def devices(
        self,
        prefix: str = "",
        tag: str = "",
        sort: str = "id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> FleetDevicePage:
        params = {
            "prefix": prefix,
            "tag": tag,
            "sort": sort,
            "descending": descending,
            "offset": offset,
            "limit": limit,
        }
        return FleetDevicePage.model_validate(
            (await self.call("GET", "/v1/console/fleet/devices", params=params)).json()
        )

    async def recent_events(self, device_id: str) -> RecentEventList:
        response = await self.call("GET", f"/v1/console/devices/{device_id}/events")
        return RecentEventList.model_validate(response.json())


class EventsClient(ApiClient):
    async def cursor(self, device_id: str) -> EventCursorView:
        return EventCursorView.model_validate((await self.call("GET", f"/v1/devices/{device_id}/events/cursor")).json())

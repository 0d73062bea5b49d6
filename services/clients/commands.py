"""The commands app's REST API as a typed client (`services.contracts.commands`): the CLI and the
tests queue, read, list and cancel durable commands with it."""

from __future__ import annotations

from typing import Any

from services.clients.base import ApiClient
from services.contracts.commands import CommandBody, CommandRecord, CommandStatus


class CommandsClient(ApiClient):
    async def send(self, device_id: str, command: CommandBody) -> CommandRecord:
        body = command.model_dump(mode="json", exclude_none=True)
        response = await self.call("POST", f"/v1/devices/{device_id}/commands", json=body)
        return CommandRecord.model_validate(response.json())

    async def get(self, device_id: str, command_id: str) -> CommandRecord:
        response = await self.call("GET", f"/v1/devices/{device_id}/commands/{command_id}")
        return CommandRecord.model_validate(response.json())

    async def list_commands(
        self, device_id: str, status: CommandStatus | None = None, limit: int = 100
    ) -> list[CommandRecord]:
        params: dict[str, Any] = {"limit": limit, **({"status": status.value} if status else {})}
        response = await self.call("GET", f"/v1/devices/{device_id}/commands", params=params)
        return [CommandRecord.model_validate(item) for item in response.json()]

    async def cancel(self, device_id: str, command_id: str) -> CommandRecord:
        response = await self.call("POST", f"/v1/devices/{device_id}/commands/{command_id}/cancel")
        return CommandRecord.model_validate(response.json())

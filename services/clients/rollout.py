"""The rollout app's REST API as a typed client (`services.contracts.rollout`): used by the firmware
app (who refers to an artifact), the CLI and the tests."""

from __future__ import annotations

from typing import Any, Literal

from services.clients.base import ApiClient
from services.contracts.rollout import (
    ConfigurationSpec,
    ConfigurationView,
    HistoryList,
    InstallBody,
    MemberList,
    PreviewBody,
    PreviewView,
    ReleaseBody,
    RetryBody,
    RolloutProgress,
)

Action = Literal["activate", "pause", "resume", "cancel"]


class RolloutClient(ApiClient):
    async def configurations(self) -> list[ConfigurationView]:
        response = await self.call("GET", "/v1/configurations")
        return [ConfigurationView.model_validate(item) for item in response.json()["items"]]

    async def get(self, configuration_id: str) -> ConfigurationView:
        return ConfigurationView.model_validate(
            (await self.call("GET", f"/v1/configurations/{configuration_id}")).json()
        )

    async def create(self, spec: ConfigurationSpec | dict[str, Any]) -> ConfigurationView:
        body = _spec_body(spec)
        return ConfigurationView.model_validate((await self.call("POST", "/v1/configurations", json=body)).json())

    async def update(self, configuration_id: str, spec: ConfigurationSpec | dict[str, Any]) -> ConfigurationView:
        """Replace a draft's spec."""
        body = _spec_body(spec)
        response = await self.call("PUT", f"/v1/configurations/{configuration_id}", json=body)
        return ConfigurationView.model_validate(response.json())

    async def act(self, configuration_id: str, action: Action, *, rollback: bool = True) -> ConfigurationView:
        body = {"rollback": rollback} if action == "cancel" else None
        response = await self.call("POST", f"/v1/configurations/{configuration_id}/{action}", json=body)
        return ConfigurationView.model_validate(response.json())

    async def delete(self, configuration_id: str) -> None:
        await self.call("DELETE", f"/v1/configurations/{configuration_id}")

    async def metrics(self, configuration_id: str) -> RolloutProgress:
        response = await self.call("GET", f"/v1/configurations/{configuration_id}/metrics")
        return RolloutProgress.model_validate(response.json())

    async def history(self, configuration_id: str) -> HistoryList:
        response = await self.call("GET", f"/v1/configurations/{configuration_id}/history")
        return HistoryList.model_validate(response.json())

    async def retry(self, configuration_id: str, devices: list[str] | None = None) -> ConfigurationView:
        """Try failed twins again now (these `devices`, or every failed twin)."""
        body = RetryBody(devices=devices).model_dump(mode="json", exclude_none=True)
        return await self._post_view(configuration_id, "retry", body)

    async def install(self, configuration_id: str, trigger: InstallBody) -> ConfigurationView:
        """Install a download-only update on devices, a stage or all twins."""
        body = trigger.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        return await self._post_view(configuration_id, "install", body)

    async def release(self, configuration_id: str, cohort: str) -> ConfigurationView:
        """Admit a quarantined cohort (`key=value`) again."""
        return await self._post_view(configuration_id, "release", ReleaseBody(cohort=cohort).model_dump(mode="json"))

    async def preview(
        self, spec: ConfigurationSpec | dict[str, Any] | str, options: PreviewBody | None = None
    ) -> PreviewView:
        """A dry run: of a spec (not stored), or of a stored draft (its id)."""
        body = (options or PreviewBody()).model_dump(mode="json", exclude_none=True)
        if isinstance(spec, str):
            response = await self.call("POST", f"/v1/configurations/{spec}/preview", json=body)
        else:
            response = await self.call("POST", "/v1/configurations/preview", json={**body, "spec": _spec_body(spec)})
        return PreviewView.model_validate(response.json())

    async def _post_view(self, configuration_id: str, what: str, body: dict[str, Any]) -> ConfigurationView:
        response = await self.call("POST", f"/v1/configurations/{configuration_id}/{what}", json=body)
        return ConfigurationView.model_validate(response.json())

    async def members(self, configuration_id: str, status: str | None = None, limit: int = 100) -> MemberList:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        response = await self.call("GET", f"/v1/configurations/{configuration_id}/devices", params=params)
        return MemberList.model_validate(response.json())


def _spec_body(spec: ConfigurationSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, ConfigurationSpec):
        return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return spec

"""Which `twin` verb carries each REST operation of each app (`tests/unit/test_cli_operations.py`
walks every app's OpenAPI document and the CLI's commands against this table, so a new route
without a verb, or a verb that went away, fails the test)."""

from __future__ import annotations

OPERATIONS: dict[str, str] = {
    # twin-store
    "GET /v1/twins": "list",
    "POST /v1/twins/batch": "batch",
    "GET /v1/twins/{device_id}": "get",
    "PUT /v1/twins/{device_id}": "devices create",
    "DELETE /v1/twins/{device_id}": "delete",
    "PATCH /v1/twins/{device_id}/desired": "desire",
    "PATCH /v1/twins/{device_id}/tags": "tag",
    "GET /v1/api-keys": "keys list",
    "POST /v1/api-keys": "keys create",
    "GET /v1/api-keys/{key_id}": "keys get",
    "DELETE /v1/api-keys/{key_id}": "keys revoke",
    "GET /v1/audit": "audit",
    # commands
    "POST /v1/devices/{device_id}/commands": "commands send",
    "GET /v1/devices/{device_id}/commands": "commands list",
    "GET /v1/devices/{device_id}/commands/{command_id}": "commands get",
    "POST /v1/devices/{device_id}/commands/{command_id}/cancel": "commands cancel",
    # events
    "GET /v1/devices/{device_id}/events/cursor": "events cursor",
    # rollout
    "GET /v1/configurations": "config list",
    "POST /v1/configurations": "config create",
    "GET /v1/configurations/{configuration_id}": "config get",
    "PUT /v1/configurations/{configuration_id}": "config update",
    "DELETE /v1/configurations/{configuration_id}": "config delete",
    "POST /v1/configurations/{configuration_id}/activate": "config activate",
    "POST /v1/configurations/{configuration_id}/pause": "config pause",
    "POST /v1/configurations/{configuration_id}/resume": "config resume",
    "POST /v1/configurations/{configuration_id}/cancel": "config cancel",
    "POST /v1/configurations/{configuration_id}/retry": "config retry",
    "POST /v1/configurations/{configuration_id}/install": "config install",
    "POST /v1/configurations/{configuration_id}/release": "config release",
    "POST /v1/configurations/preview": "config preview",
    "POST /v1/configurations/{configuration_id}/preview": "config preview",
    "GET /v1/configurations/{configuration_id}/metrics": "config metrics",
    "GET /v1/configurations/{configuration_id}/history": "config history",
    "GET /v1/configurations/{configuration_id}/devices": "config devices",
    # firmware
    "POST /v1/artifacts": "firmware upload",
    "GET /v1/artifacts": "firmware list",
    "GET /v1/artifacts/{artifact_id}": "firmware get",
    "DELETE /v1/artifacts/{artifact_id}": "firmware delete",
    "POST /v1/metadata/targets": "firmware sign",
    "POST /v1/metadata/root": "firmware rotate",
    "GET /v1/metadata/{file_name}": "firmware metadata",
    "POST /v1/artifacts/{artifact_id}/urls": "firmware url",
    "GET /v1/artifacts/{artifact_id}/downloads": "firmware downloads",
    "GET /v1/keys": "firmware keys",
    # console
    "GET /v1/console/fleet": "fleet counts",
    "GET /v1/console/fleet/devices": "fleet devices",
    "GET /v1/console/devices/{device_id}/events": "events recent",
}

NO_VERB: dict[str, str] = {
    "POST /v1/artifacts/{artifact_id}/credentials": "device-facing: a device exchanges its own credential",
    "GET /v1/artifacts/{artifact_id}/download": "device-facing: a device downloads with its grant",
    "GET /v1/console/session": "the browser's session (the CLI keeps its own login: `twin login`)",
    "POST /v1/console/session": "the browser's session (the CLI keeps its own login: `twin login`)",
    "DELETE /v1/console/session": "the browser's session (the CLI keeps its own login: `twin logout`)",
    "GET /v1/console/live": "the pages' live stream (the CLI follows rollouts with `config metrics --watch`)",
    "GET /v1/console/api/{app}/{path}": "the pages' calls to the apps, which the CLI makes directly",
    "POST /v1/console/api/{app}/{path}": "the pages' calls to the apps, which the CLI makes directly",
    "PUT /v1/console/api/{app}/{path}": "the pages' calls to the apps, which the CLI makes directly",
    "PATCH /v1/console/api/{app}/{path}": "the pages' calls to the apps, which the CLI makes directly",
    "DELETE /v1/console/api/{app}/{path}": "the pages' calls to the apps, which the CLI makes directly",
}
"""Operations with no verb, and why."""

"""Who may call each commands route (`services.domain.access`); a route missing here is refused."""

from services.domain.access import SIDECAR, Role, Rule, allow

RULES: dict[str, Rule] = {
    "POST /v1/devices/{device_id}/commands": allow(Role.OPERATOR, scoped=True),
    "GET /v1/devices/{device_id}/commands": allow(Role.VIEWER, scoped=True),
    "GET /v1/devices/{device_id}/commands/{command_id}": allow(Role.VIEWER, scoped=True),
    "POST /v1/devices/{device_id}/commands/{command_id}/cancel": allow(Role.OPERATOR, scoped=True),
    "POST /device-command-results": SIDECAR,
    "POST /device-command-sync": SIDECAR,
}

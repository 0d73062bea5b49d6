"""Who may call each events route (`services.domain.access`); a route missing here is refused."""

from services.domain.access import SIDECAR, Role, Rule, allow

RULES: dict[str, Rule] = {
    "GET /v1/devices/{device_id}/events/cursor": allow(Role.VIEWER, scoped=True),
    "POST /device-events": SIDECAR,
}

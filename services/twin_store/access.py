"""Who may call each twin-store route (`services.domain.access`); a route missing here is refused."""

from services.domain.access import SIDECAR, Role, Rule, allow

RULES: dict[str, Rule] = {
    "GET /v1/twins": allow(Role.VIEWER, scoped=True),
    "POST /v1/twins/batch": allow(Role.OPERATOR, scoped=True),
    "GET /v1/twins/{device_id}": allow(Role.VIEWER, scoped=True),
    "PUT /v1/twins/{device_id}": allow(Role.ADMIN, scoped=True),
    "DELETE /v1/twins/{device_id}": allow(Role.ADMIN, scoped=True),
    "PATCH /v1/twins/{device_id}/desired": allow(Role.OPERATOR, scoped=True),
    "PATCH /v1/twins/{device_id}/tags": allow(Role.OPERATOR, scoped=True),
    "POST /v1/api-keys": allow(Role.ADMIN),
    "GET /v1/api-keys": allow(Role.ADMIN),
    "GET /v1/api-keys/{key_id}": allow(Role.ADMIN),
    "DELETE /v1/api-keys/{key_id}": allow(Role.ADMIN),
    "GET /v1/audit": allow(Role.ADMIN),
    "POST /events/audit": SIDECAR,
}
"""`POST /device-requests` (device messages from the sidecar) is served in front of FastAPI and
checked there (`SidecarGate`)."""

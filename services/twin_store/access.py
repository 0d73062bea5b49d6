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
"""Device requests do not come over HTTP at all: the twin-store takes them on its own broker
connection (`device_requests.py`), as the broker's ACL lets only each device publish its own."""

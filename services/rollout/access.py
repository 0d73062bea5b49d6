"""Who may call each rollout route (`services.domain.access`); a route missing here is refused.
Scoped routes act on one configuration: a scoped caller reaches only those created within its
scope (`api._in_scope`)."""

from services.domain.access import SIDECAR, Role, Rule, allow

RULES: dict[str, Rule] = {
    "POST /v1/configurations": allow(Role.RELEASE_MANAGER, scoped=True),
    "GET /v1/configurations": allow(Role.VIEWER, scoped=True),
    "GET /v1/configurations/{configuration_id}": allow(Role.VIEWER, scoped=True),
    "PUT /v1/configurations/{configuration_id}": allow(Role.RELEASE_MANAGER, scoped=True),
    "DELETE /v1/configurations/{configuration_id}": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/activate": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/pause": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/resume": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/cancel": allow(Role.RELEASE_MANAGER, scoped=True),
    "GET /v1/configurations/{configuration_id}/metrics": allow(Role.VIEWER, scoped=True),
    "GET /v1/configurations/{configuration_id}/history": allow(Role.VIEWER, scoped=True),
    "GET /v1/configurations/{configuration_id}/devices": allow(Role.VIEWER, scoped=True),
    "POST /v1/configurations/{configuration_id}/retry": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/install": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/{configuration_id}/release": allow(Role.RELEASE_MANAGER, scoped=True),
    "POST /v1/configurations/preview": allow(Role.VIEWER, scoped=True),
    "POST /v1/configurations/{configuration_id}/preview": allow(Role.VIEWER, scoped=True),
    "POST /events/twin-changed": SIDECAR,
    "POST /events/device-events": SIDECAR,
}

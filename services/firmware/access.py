"""Who may call each firmware route (`services.domain.access`); a route missing here is refused.
Devices reach their routes directly (not through a sidecar) and prove who they are there: a
pre-signed URL, or their own credentials plus a temporary credential."""

from services.domain.access import DEVICE, PUBLIC, Role, Rule, allow

RULES: dict[str, Rule] = {
    "POST /v1/artifacts": allow(Role.RELEASE_MANAGER),
    "GET /v1/artifacts": allow(Role.VIEWER),
    "GET /v1/artifacts/{artifact_id}": allow(Role.VIEWER),
    "DELETE /v1/artifacts/{artifact_id}": allow(Role.RELEASE_MANAGER),
    "POST /v1/metadata/targets": allow(Role.RELEASE_MANAGER),
    "POST /v1/metadata/root": allow(Role.ADMIN),
    # TUF metadata: devices fetch it and trust only what their provisioned root's keys signed
    "GET /v1/metadata/{file_name}": PUBLIC,
    "GET /v1/keys": allow(Role.VIEWER),
    # a device-bound download URL: what the delta app late-binds into deltas (operators may too)
    "POST /v1/artifacts/{artifact_id}/urls": allow(Role.OPERATOR),
    "POST /v1/artifacts/{artifact_id}/credentials": DEVICE,
    "GET /v1/artifacts/{artifact_id}/download": DEVICE,
    "GET /v1/artifacts/{artifact_id}/downloads": allow(Role.VIEWER),
}

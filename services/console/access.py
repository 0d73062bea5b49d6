"""Who may call each console route (`services.domain.access`); a route missing here is refused.
The pages and the session (sign-in, who is signed in, sign-out) are public; everything else needs
a signed-in caller, and every call the console forwards is checked again by the app that serves
it, with the caller's own credential."""

from services.domain.access import PUBLIC, SIDECAR, Role, Rule, allow

FORWARDED = "/v1/console/api/{app}/{path:path}"

RULES: dict[str, Rule] = {
    "GET /console": PUBLIC,
    "GET /console/{asset}": PUBLIC,
    "POST /v1/console/session": PUBLIC,
    "DELETE /v1/console/session": PUBLIC,
    "GET /v1/console/session": PUBLIC,
    "GET /v1/console/fleet": allow(Role.VIEWER, scoped=True),
    "GET /v1/console/fleet/devices": allow(Role.VIEWER, scoped=True),
    "GET /v1/console/live": allow(Role.VIEWER, scoped=True),
    "GET /v1/console/devices/{device_id}/events": allow(Role.VIEWER, scoped=True),
    f"GET {FORWARDED}": allow(Role.VIEWER, scoped=True),
    f"POST {FORWARDED}": allow(Role.VIEWER, scoped=True),
    f"PATCH {FORWARDED}": allow(Role.VIEWER, scoped=True),
    f"PUT {FORWARDED}": allow(Role.VIEWER, scoped=True),
    f"DELETE {FORWARDED}": allow(Role.VIEWER, scoped=True),
    "POST /events/twin-changed": SIDECAR,
    "POST /events/device-events": SIDECAR,
}

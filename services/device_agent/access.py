"""Who may call each device-agent route. The local API serves apps on the device itself (the
agent listens inside the device's pod), not operators; cloud messages come only from the agent's
own sidecar."""

from services.domain.access import PUBLIC, SIDECAR, Rule

RULES: dict[str, Rule] = {
    "POST /v1/events": PUBLIC,
    "GET /v1/status": PUBLIC,
    "GET /v1/software": PUBLIC,
    "POST /v1/software/consent": PUBLIC,
    "POST /cloud/replies": SIDECAR,
    "POST /cloud/delta": SIDECAR,
    "POST /cloud/commands": SIDECAR,
    "POST /cloud/events-ack": SIDECAR,
}

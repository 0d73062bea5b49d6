"""Who may call each delta route: only its sidecar delivers events; it serves no API."""

from services.domain.access import SIDECAR, Rule

RULES: dict[str, Rule] = {
    "POST /events/twin-changed": SIDECAR,
    "POST /events/delta-requested": SIDECAR,
}

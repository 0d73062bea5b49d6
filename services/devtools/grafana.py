"""Write the suite's Grafana dashboard (deploy/grafana/twinfleet.json) from the panel list below,
and copy Dapr's own dashboards from its Go module at the pinned runtime version (`make grafana`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path("deploy/grafana")
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Accepted updates/s",
        "reqps",
        [('sum(rate(twinstore_commands_total{result="ok"}[1m])) by (command)', "{{command}}")],
    ),
    (
        "Accept latency (p50 / p99)",
        "s",
        [
            ("histogram_quantile(0.5, sum(rate(twinstore_accept_seconds_bucket[5m])) by (le))", "p50"),
            ("histogram_quantile(0.99, sum(rate(twinstore_accept_seconds_bucket[5m])) by (le))", "p99"),
        ],
    ),
    ("Rejects by code", "reqps", [("sum(rate(twinstore_rejects_total[5m])) by (code)", "{{code}}")]),
    (
        "Devices by connection state",
        "short",
        [('sum(console_fleet_devices{facet="connection"}) by (value)', "{{value}}")],
    ),
    (
        "Devices by software version",
        "short",
        [('sum(console_fleet_devices{facet="software"}) by (value)', "{{value}}")],
    ),
    (
        "Delta fan-out lag (p50 / p99)",
        "s",
        [
            ("histogram_quantile(0.5, sum(rate(delta_fanout_lag_seconds_bucket[5m])) by (le))", "p50"),
            ("histogram_quantile(0.99, sum(rate(delta_fanout_lag_seconds_bucket[5m])) by (le))", "p99"),
        ],
    ),
    ("Deltas and documents sent/s", "reqps", [("sum(rate(delta_published_total[1m])) by (kind)", "{{kind}}")]),
    (
        "Rollout admissions (twin writes/s)",
        "reqps",
        [("sum(rate(rollout_twin_writes_total[1m])) by (outcome)", "{{outcome}}")],
    ),
    (
        "Rollout halts and decisions",
        "short",
        [
            (
                "sum(increase(rollout_decisions_total[10m])) by (configuration, decision)",
                "{{configuration}} {{decision}}",
            )
        ],
    ),
    (
        "Rollout twins by status",
        "short",
        [("sum(rollout_twins) by (configuration, status)", "{{configuration}} {{status}}")],
    ),
    ("Firmware bytes served/s", "Bps", [("sum(rate(firmware_bytes_served_total[1m]))", "bytes/s")]),
    ("Active downloads", "short", [("sum(firmware_downloads_active)", "active")]),
    ("Device agent outbox depth", "short", [("twinfleet_agent_outbox_events", "{{instance}}")]),
    ("Commands", "short", [("sum(rate(commands_completed_total[5m])) by (status)", "{{status}}")]),
    ("Refused calls (401/403)", "reqps", [("sum(rate(auth_refusals_total[5m])) by (status)", "{{status}}")]),
    (
        "Console: live subscribers and index",
        "short",
        [("console_live_subscribers", "live subscribers"), ("console_fleet_twins", "twins indexed")],
    ),
]


def dashboard() -> dict[str, object]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": DS,
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": "twinfleet-suite",
        "title": "Twinfleet",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "twinfleet.json").write_text(json.dumps(dashboard(), indent=2) + "\n")
    version = sys.argv[1]
    module = f"github.com/dapr/dapr@v{version}"
    found = subprocess.run(
        ["go", "mod", "download", "-json", module], capture_output=True, text=True, check=True, env=os.environ
    )
    source = Path(json.loads(found.stdout)["Dir"]) / "grafana"
    (OUT / "dapr").mkdir(exist_ok=True)
    for board in sorted(source.glob("*.json")):
        shutil.copyfile(board, OUT / "dapr" / board.name)
        (OUT / "dapr" / board.name).chmod(0o644)
    print(f"wrote {OUT / 'twinfleet.json'} and Dapr's dashboards of {module}")


if __name__ == "__main__":
    main()

"""The Grafana dashboard names only metrics the apps export (a renamed metric fails here), and
what is committed is what the generator writes."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

from services.devtools.grafana import PANELS, dashboard

METRIC_MODULES = [
    "services.twin_store.metrics",
    "services.delta.metrics",
    "services.rollout.metrics",
    "services.firmware.metrics",
    "services.commands.metrics",
    "services.events.metrics",
    "services.console.metrics",
    "services.device_agent.metrics",
    "services.platform.auth",
]

METRIC = r"\b((?:twinstore|delta|rollout|firmware|commands|console|twinfleet|auth)_[a-z_]+)"


def exported() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + end for family in REGISTRY.collect() for end in suffixes.get(family.type, ("",))}


def test_every_panel_names_a_metric_an_app_exports() -> None:
    known = exported()
    for title, _, targets in PANELS:
        for expr, _ in targets:
            names = set(
                re.findall(r"\b((?:twinstore|delta|rollout|firmware|commands|console|twinfleet|auth)_[a-z_]+)", expr)
            )
            assert names, title
            assert names <= known, f"{title}: {sorted(names - known)} not exported"


def test_the_committed_dashboard_is_the_generated_one() -> None:
    committed = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "twinfleet.json").read_text())
    assert committed == dashboard()

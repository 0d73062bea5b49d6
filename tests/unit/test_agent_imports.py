"""The device agent's process loads what it uses and no more: on a device, the Dapr SDK (with
grpc), aiohttp, FastAPI's models, the cloud apps' JWT guard, OpenTelemetry and the cloud KMS
signers TUF's crypto library finds installed would be most of its memory (issue 12's budget).
TUF itself loads only on a device that updates software."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "dapr",
    "grpc",
    "aiohttp",
    "rich",
    "pygments",
    "fastapi",
    "svcs",
    "jwt",
    "opentelemetry",
    "boto3",
    "azure",
    "tuf",
    "securesystemslib",
)


def loaded_after(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nprint(','.join(m for m in {HEAVY!r} if sys.modules.get(m) is not None))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in done.stdout.strip().split(",") if m]


def test_the_agents_entry_module_imports_none_of_the_cloud_apps_heavy_packages() -> None:
    assert loaded_after("import services.device_agent.main") == []


def test_a_device_that_updates_software_loads_tuf_but_no_cloud_signer() -> None:
    loaded = loaded_after("import services.device_agent.main, services.device_agent.software")
    assert sorted(loaded) == ["securesystemslib", "tuf"]

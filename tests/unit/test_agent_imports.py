"""The device agent's process loads what it uses and no more: on a device, the Dapr SDK (with
grpc) and aiohttp would be a large share of its memory, and the agent talks to its sidecar over
plain HTTP."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("dapr", "grpc", "aiohttp", "rich", "pygments")


def test_the_agents_entry_module_imports_no_dapr_sdk_grpc_or_aiohttp() -> None:
    probe = (
        "import sys, services.device_agent.main\n"
        f"print(','.join(m for m in {HEAVY!r} if sys.modules.get(m) is not None))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"the agent loaded {loaded.stdout.strip()}"

"""Running the `twin` CLI against a test stack, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from services.devtools.stack import Stack


def twin_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TWINFLEET_RUN_DIR": str(stack.run_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )

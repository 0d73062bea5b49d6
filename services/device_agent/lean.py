"""Imported first by the agent's entry module (`main.py`): packages that load optional integrations
whenever they find them installed (svcs loads its aiohttp support, httpx its command line with
rich and pygments) find them absent in the agent's process. The agent uses none of them, and on a
device they would be a sixth of its memory. A `None` in `sys.modules` makes `import` raise
ImportError, which those packages handle; a process that already loaded one keeps it."""

from __future__ import annotations

import sys

UNUSED = ("aiohttp", "rich", "pygments")

for name in UNUSED:
    sys.modules.setdefault(name, None)  # type: ignore[arg-type]

"""How many inputs the bad-input suite tried, per surface (printed at the end of the run)."""

from __future__ import annotations

from collections import Counter

import pytest

TRIED: Counter[str] = Counter()
FIGURES: list[str] = []
"""Measured along the way (printed with the counts)."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TRIED:
        terminalreporter.section("bad input tried, per surface")
        for surface, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{count:>7}  {surface}")
        terminalreporter.write_line(f"{sum(TRIED.values()):>7}  in all")
    for figure in FIGURES:
        terminalreporter.write_line(figure)

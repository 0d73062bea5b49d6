"""The pytest plugin of `twinfleet.testing` (registered as a `pytest11` entry point): the fixture
`twinfleet_suite`, the whole suite in containers for the test session, removed at its end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from twinfleet.testing.suite import TwinfleetSuite


@pytest.fixture(scope="session")
def twinfleet_suite() -> Iterator[TwinfleetSuite]:
    """A started suite (every app ready); every container and the network are removed after the
    session, whether its tests passed or not."""
    from twinfleet.testing.suite import TwinfleetSuite  # docker is imported only when used

    with TwinfleetSuite() as suite:
        yield suite

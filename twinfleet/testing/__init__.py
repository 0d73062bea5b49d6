"""Integration tests against the whole Twinfleet suite in containers (testcontainers).

    from twinfleet.testing import TwinfleetSuite

    with TwinfleetSuite() as suite:           # Redis, Mosquitto, every app with its daprd sidecar
        suite.api_url                          # the twin-store's REST API (also suite.urls[app])
        device = suite.provision_device("kitchen-sensor")   # MQTT credentials, host and port

With pytest, the `twinfleet_suite` fixture (session-scoped, from this package's pytest plugin)
yields a started suite. The images come from `make images` in the twinfleet repository (or as
TWINFLEET_*_IMAGE name them: `Images`); nothing is pulled. Cleanup does not need Ryuk: see
`twinfleet.testing.suite`.
"""

from twinfleet.testing.suite import DeviceAgentContainer, DeviceCredentials, Images, TwinfleetSuite

__all__ = ["DeviceAgentContainer", "DeviceCredentials", "Images", "TwinfleetSuite"]

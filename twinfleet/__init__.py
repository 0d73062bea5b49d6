"""Twinfleet's public Python API for those who build on the suite (`twinfleet.testing`); the suite
itself is the `services` package."""

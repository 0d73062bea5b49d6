"""Typed clients of the suite's REST APIs, over the contracts in `services.contracts`: what one app
uses to call another (through its sidecar, or a direct address), and what the CLI and the tests use."""

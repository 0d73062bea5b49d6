"""What the images are called and what they are built from: one definition for the builder, the
testing suite and the tests (the Helm charts' defaults name the same tags)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
"""The repository (the Dockerfiles are in `images/`)."""
VERSION = version("twinfleet")
DAPR_RUNTIME_VERSION = "1.18.0"
"""The daprd the Makefile builds (its DAPR_RUNTIME_VERSION; a unit test keeps them equal)."""
PIP_VERSION = "25.1.1"
"""The installer the Python image's build runs from its wheel (it is not left in the image)."""
EPOCH = 1747699200
"""SOURCE_DATE_EPOCH of every image (2025-05-20): file times and `created` are this, so the same
inputs give the same image ID."""
INPUTS_LABEL = "org.twinfleet.image.inputs"
"""The digest of everything an image was built from; a matching image is reused, not rebuilt."""

BASE_IMAGE = "twinfleet/base:bookworm"
PYTHON_IMAGE = "twinfleet/python:3.11"
APP_IMAGE = f"twinfleet/app:{VERSION}"
DAPRD_IMAGE = f"twinfleet/daprd:{DAPR_RUNTIME_VERSION}"
DEVICE_DAPRD_IMAGE = f"twinfleet/daprd-device:{DAPR_RUNTIME_VERSION}"
"""The device's sidecar: the daprd build with only the components the agent uses."""
REDIS_IMAGE = "twinfleet/redis:7.0"
MOSQUITTO_IMAGE = "twinfleet/mosquitto:2.0"

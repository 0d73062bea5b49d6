"""The suite's container images, built on this machine without a registry (`make images`)."""

"""Prometheus metrics of the firmware app."""

from prometheus_client import Counter, Gauge

BYTES_SERVED = Counter("firmware_bytes_served_total", "Artifact bytes sent to devices")
DOWNLOADS = Counter("firmware_downloads_total", "Download requests", ["outcome"])
ACTIVE = Gauge("firmware_downloads_active", "Downloads being served")
UPLOADED = Counter("firmware_bytes_uploaded_total", "Artifact bytes stored")

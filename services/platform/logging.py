"""Structured JSON logs for every app (structlog)."""

from __future__ import annotations

import logging

import structlog


def configure_logging(app_id: str, level: str = "INFO") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
    )
    structlog.contextvars.bind_contextvars(app=app_id)

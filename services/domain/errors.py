"""Domain errors as values: each kind maps to exactly one HTTP status / MQTT rejection code."""

from __future__ import annotations

from enum import IntEnum

from pydantic import ValidationError


class ErrorCode(IntEnum):
    """Rejection codes shared by the MQTT contract (`/rejected` payloads) and the REST API."""

    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    TOO_LARGE = 413
    RANGE_NOT_SATISFIABLE = 416
    TOO_MANY_REQUESTS = 429
    INTERNAL = 500
    UNAVAILABLE = 503


class TwinError(Exception):
    """A request the domain refuses; `code` says why, `message` tells the caller what to fix."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"TwinError({int(self.code)}, {self.message!r})"


def bad_request(message: str) -> TwinError:
    return TwinError(ErrorCode.BAD_REQUEST, message)


def invalid(what: str, error: ValidationError, whole: str = "payload") -> TwinError:
    """A 400 naming the first problem a model found, located (`event batch: events.0.seq: ...`);
    `whole` names the place when the problem is the value itself."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or whole
    return bad_request(f"{what}: {where}: {first['msg']}")


def not_found(message: str) -> TwinError:
    return TwinError(ErrorCode.NOT_FOUND, message)


def conflict(message: str) -> TwinError:
    return TwinError(ErrorCode.CONFLICT, message)


def too_large(message: str) -> TwinError:
    return TwinError(ErrorCode.TOO_LARGE, message)


def too_many_requests(message: str) -> TwinError:
    return TwinError(ErrorCode.TOO_MANY_REQUESTS, message)


def forbidden(message: str) -> TwinError:
    return TwinError(ErrorCode.FORBIDDEN, message)


def range_not_satisfiable(message: str) -> TwinError:
    return TwinError(ErrorCode.RANGE_NOT_SATISFIABLE, message)


def unauthorized(message: str) -> TwinError:
    return TwinError(ErrorCode.UNAUTHORIZED, message)


def unavailable(message: str) -> TwinError:
    return TwinError(ErrorCode.UNAVAILABLE, message)

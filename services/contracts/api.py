"""What every REST model shares: one spelling on the wire (camelCase, like the device contract's
`clientToken`), Python names in snake_case, and one error body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A REST request or response body: camelCase on the wire, snake_case in Python (either is
    accepted when constructing one in code)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class RequestModel(ApiModel):
    """A request body: unknown fields are refused (400), nothing is coerced silently."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(ApiModel):
    """Every refusal, from every app: `{"code": 404, "message": "what to fix"}`."""

    code: int
    message: str

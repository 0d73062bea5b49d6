"""Wire templates: a device registers the shape of what it sends once (a named, versioned list of
leaf paths), then sends only the values, in that order, without keys.

A templated payload is one CBOR array (first byte 0x80..0x9f, so it is told apart from a CBOR map
and from JSON by its first byte, like the other encodings):

    [name, version, presence, value, value, ..., extras?]

`name` and `version` say which registered template; `presence` a byte string with one bit per template field
(field i is bit i % 8 of byte i // 8; trailing zero bytes may be left out); then one value per
present field, in the template's order; then, only if the document holds anything the template
does not name (a new key, a section set to null, an empty object), one CBOR map of it, merged
into the decoded document. Any JSON document therefore round-trips, whatever its template; one
that matches it costs only its values.

Field kinds say how a value is packed: `any` as CBOR; `decimal` (with `scale` digits after the
point) a number that is exactly `n / 10**scale` as the integer `n`, anything else wrapped in a
one-item array; `uuid` a canonical lower-case UUID string as its 16 bytes, anything else as CBOR.
The codec is `services.domain.twin.template`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from services.contracts.api import RequestModel

MAX_TEMPLATE_FIELDS = 1024
MAX_SCALE = 6


class FieldKind(StrEnum):
    ANY = "any"
    DECIMAL = "decimal"
    UUID = "uuid"


class TemplateField(RequestModel):
    """One leaf of the document: its path of keys from the root, and how its value is packed."""

    path: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(min_length=1, max_length=16)]
    kind: Annotated[FieldKind, Field(strict=False)] = FieldKind.ANY
    """How the value is packed (its name on the wire: `any`, `decimal`, `uuid`)."""
    scale: Annotated[int, Field(ge=0, le=MAX_SCALE)] = 0
    """Digits after the decimal point (`decimal` only)."""


MAX_TEMPLATES_PER_TWIN = 4


class WireTemplate(RequestModel):
    """What a device registers (`{id}/state/template`, JSON): its template `name`, a `version` that
    grows with every change of `fields`, and the fields in the order their values are sent."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    fields: Annotated[list[TemplateField], Field(min_length=1, max_length=MAX_TEMPLATE_FIELDS)]

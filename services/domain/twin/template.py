"""Template-driven encoding (`services.contracts.templates`): pure functions from a JSON document
and a registered template to the keyless wire form, and back to the same document.

`encode` walks the template's fields, packs each present leaf by its kind and sets its presence
bit; whatever the document holds that no field names goes into the trailing extras map, so every
JSON document round-trips (`decode(encode(doc, t), t)` equals `doc` under JSON equality, key order
aside). `template_for` derives a template from an example document (decimals by the digits they
need, UUID-shaped strings as UUIDs), which is what a device does before registering one.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from services.contracts.templates import MAX_SCALE, FieldKind, TemplateField, WireTemplate
from services.contracts.wire import check_json_compatible
from services.domain.errors import bad_request

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MISSING = object()


def is_templated(payload: bytes) -> bool:
    """A templated payload is a CBOR array (major type 4); JSON and CBOR maps never start so."""
    return bool(payload) and 0x80 <= payload[0] <= 0x9F


def encode(document: dict[str, Any], template: WireTemplate) -> bytes:
    """`document` as the keyless wire form of `template`."""
    presence = bytearray((len(template.fields) + 7) // 8)
    values: list[Any] = []
    named: dict[str, Any] = {}
    for index, field in enumerate(template.fields):
        value = _lookup(document, field.path)
        if value is _MISSING:
            continue
        presence[index // 8] |= 1 << (index % 8)
        values.append(_pack(value, field))
        _mark(named, field.path)
    extras = _extras(document, named)
    item: list[Any] = [template.name, template.version, bytes(presence.rstrip(b"\0")), *values]
    if extras:
        item.append(extras)
    return cbor2.dumps(item)


def decode(payload: bytes, templates: Mapping[str, WireTemplate]) -> dict[str, Any]:
    """The document a templated payload carries, by the registered template it names (`templates`
    by name); 400 if it is malformed or names no registered template at that version."""
    try:
        item = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as error:
        raise bad_request(f"templated payload is not valid CBOR: {error}") from None
    if (
        not isinstance(item, list)
        or len(item) < 3
        or type(item[0]) is not str
        or type(item[1]) is not int
        or type(item[2]) is not bytes
    ):
        raise bad_request("templated payload must be [name, version, presence, values..., extras?]")
    name, version, presence = item[0], item[1], item[2]
    template = templates.get(name)
    if template is None:
        raise bad_request(f"no template {name!r} is registered for this twin; publish it to .../template first")
    if version != template.version:
        raise bad_request(f"template {name!r} is registered at version {template.version}, not {version}")
    count = len(template.fields)
    bits = int.from_bytes(presence, "little")
    if len(presence) > (count + 7) // 8 or bits >> count:
        raise bad_request(f"presence names more fields than template {template.name!r} has")
    present = [i for i in range(count) if bits >> i & 1]
    values = item[3:]
    if len(values) not in (len(present), len(present) + 1):
        raise bad_request(f"{len(present)} values expected by the presence bits, {len(values)} sent")
    document: dict[str, Any] = {}
    for index, value in zip(present, values, strict=False):
        field = template.fields[index]
        _place(document, field.path, _unpack(value, field))
    if len(values) > len(present):
        extras = values[-1]
        if not isinstance(extras, dict):
            raise bad_request("the item after the values must be a map of the extras")
        _merge(document, extras)
    check_json_compatible(document)
    return document


def template_value(template: WireTemplate) -> dict[str, Any]:
    """A template as stored with its twin (its JSON form)."""
    return template.model_dump(mode="json")


def template_for(document: dict[str, Any], name: str, version: int) -> WireTemplate:
    """A template naming every leaf of `document` (arrays are leaves), in document order."""
    fields = [_field_for(path, value) for path, value in _leaves(document, [])]
    return WireTemplate(name=name, version=version, fields=fields)


# --- packing ----------------------------------------------------------------------------------


def _pack(value: Any, field: TemplateField) -> Any:
    if field.kind is FieldKind.DECIMAL:
        factor = 10**field.scale
        # Exact only well inside float precision; -0.0 keeps its sign by going unpacked.
        negative_zero = value == 0.0 and math.copysign(1.0, value) < 0
        if type(value) is float and abs(value) * factor < 2**53 and not negative_zero:
            scaled = round(value * factor)
            if scaled / factor == value:
                return scaled
        return [value]
    if field.kind is FieldKind.UUID and type(value) is str and _UUID.match(value):
        return uuid.UUID(value).bytes
    return value


def _unpack(value: Any, field: TemplateField) -> Any:
    if field.kind is FieldKind.DECIMAL:
        if type(value) is int:
            return value / 10**field.scale
        if isinstance(value, list) and len(value) == 1:
            return value[0]
        raise bad_request(f"{'.'.join(field.path)}: a decimal field holds an integer or [value]")
    if field.kind is FieldKind.UUID and type(value) is bytes:
        if len(value) != 16:
            raise bad_request(f"{'.'.join(field.path)}: a UUID is 16 bytes")
        return str(uuid.UUID(bytes=value))
    return value


# --- paths ------------------------------------------------------------------------------------


def _lookup(document: Any, path: list[str]) -> Any:
    """The value at `path`; `_MISSING` unless every step is an object holding the key."""
    for key in path:
        if type(document) is not dict or key not in document:
            return _MISSING
        document = document[key]
    return document


def _mark(tree: dict[str, Any], path: list[str]) -> None:
    """Record `path` as carried by a field (its leaf is `None` in the tree of named paths)."""
    for key in path[:-1]:
        child = tree.get(key, _MISSING)
        if child is None:  # an ancestor is itself a field: everything below is carried
            return
        tree = tree.setdefault(key, {})
    tree[path[-1]] = None


def _extras(document: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """What `document` holds beyond the paths of the fields present in it (`named`): keys no
    present field covers, whole (null sections, empty objects, new keys)."""
    extras: dict[str, Any] = {}
    for key, value in document.items():
        below = named.get(key, _MISSING)
        if below is None:
            continue  # carried by a field
        if below is _MISSING or type(value) is not dict:
            extras[key] = value
            continue
        inner = _extras(value, below)  # `value` holds a present field's leaf: decoding re-creates it
        if inner:
            extras[key] = inner
    return extras


def _place(document: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        child = document.get(key)
        if type(child) is not dict:
            child = document[key] = {}
        document = child
    document[path[-1]] = value


def _merge(document: dict[str, Any], extras: dict[str, Any]) -> None:
    for key, value in extras.items():
        if type(value) is dict and type(document.get(key)) is dict:
            _merge(document[key], value)
        else:
            document[key] = value


# --- deriving a template ----------------------------------------------------------------------


def _leaves(document: dict[str, Any], path: list[str]) -> Iterator[tuple[list[str], Any]]:
    for key, value in document.items():
        if type(value) is dict and value:
            yield from _leaves(value, [*path, key])
        else:
            yield [*path, key], value


def _field_for(path: list[str], value: Any) -> TemplateField:
    if type(value) is float:
        for scale in range(MAX_SCALE + 1):
            if abs(value) * 10**scale < 2**53 and round(value * 10**scale) / 10**scale == value:
                return TemplateField(path=path, kind=FieldKind.DECIMAL, scale=scale)
    if type(value) is str and _UUID.match(value):
        return TemplateField(path=path, kind=FieldKind.UUID)
    return TemplateField(path=path)

"""Partial-update merge of a state section and its per-leaf metadata.

Rules (the device contract, DESIGN §2, as AWS IoT's shadow merges): keys in the patch overwrite;
`null` deletes a key; objects merge recursively; arrays and scalars are values and replace whole.
An empty object is a value too: `{"d": {}}` sets `d` to `{}` (or leaves an object `d` as it is),
and deleting an object's last child leaves the object, as `{}`.
"""

from __future__ import annotations

from typing import Any

from services.domain.json_values import JsonObject


def merge_patch(target: JsonObject, patch: JsonObject) -> JsonObject:
    """Return `target` with `patch` merged in; neither input is modified."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
            continue
        if isinstance(value, dict):
            base = merged.get(key)
            merged[key] = merge_patch(base if isinstance(base, dict) else {}, value)
            continue
        merged[key] = value
    return merged


def merge_metadata(metadata: JsonObject, patch: JsonObject, merged_state: JsonObject, timestamp: int) -> JsonObject:
    """Metadata after `patch` was merged: every leaf the patch set gets `{"timestamp": t}`.

    `merged_state` is the section after the merge; metadata mirrors its shape exactly.
    """
    result: JsonObject = {}
    for key, value in merged_state.items():
        old = metadata.get(key)
        if key not in patch:
            result[key] = old if old is not None else _stamp_tree(value, timestamp)
            continue
        new = patch[key]
        if isinstance(new, dict) and isinstance(value, dict):
            subtree = old if isinstance(old, dict) and not _is_leaf_meta(old) else {}
            result[key] = merge_metadata(subtree, new, value, timestamp)
        else:
            result[key] = {"timestamp": timestamp}
    return result


def _stamp_tree(value: Any, timestamp: int) -> Any:
    if isinstance(value, dict):
        return {k: _stamp_tree(v, timestamp) for k, v in value.items()}
    return {"timestamp": timestamp}


def metadata_for(patch: JsonObject, metadata: JsonObject) -> JsonObject:
    """The part of `metadata` describing the keys in `patch` (deleted keys map to `null`)."""
    result: JsonObject = {}
    for key, value in patch.items():
        meta = metadata.get(key)
        if value is None or meta is None:
            result[key] = None
        elif isinstance(value, dict) and isinstance(meta, dict) and not _is_leaf_meta(meta):
            result[key] = metadata_for(value, meta)
        else:
            result[key] = meta
    return result


def _is_leaf_meta(meta: JsonObject) -> bool:
    """A leaf's metadata is `{"timestamp": int}`; an object's key "timestamp" maps to a dict."""
    return set(meta) == {"timestamp"} and isinstance(meta["timestamp"], int)

"""``--set section.field=value`` overrides on a spec, with one-line errors."""

from __future__ import annotations

import json
from typing import Any, Iterable

from .errors import SpecError
from .spec import GANSpec


def _parse_value(key: str, text: str, current: Any) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare word: a string
    want = type(current)
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise SpecError(key, f"expects true or false, got {text!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SpecError(key, f"expects an integer, got {text!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SpecError(key, f"expects a number, got {text!r}")
    if isinstance(current, str):
        return str(value) if not isinstance(value, str) else value
    if isinstance(current, list):
        if isinstance(value, list):
            return value
        raise SpecError(key, f"expects a JSON list, got {text!r}")
    raise SpecError(key, f"cannot be set from the command line (type {want.__name__})")


def apply_overrides(spec: GANSpec, assignments: Iterable[str]) -> GANSpec:
    """Return ``spec`` with each ``dotted.key=value`` applied, validated as a whole (a GANSpec, or
    seed 002's VAESpec: each rebuilds itself with its own ``from_dict``)."""
    d = spec.to_dict()
    for item in assignments:
        if "=" not in item:
            raise SpecError("--set", f"expects key=value (e.g. train.batch_size=32), got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node: Any = d
        in_layer = False  # a layer's 'kind' picks its class: change the layer list in a spec file instead
        for depth, part in enumerate(parts):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(where, f"index must be 0..{len(node) - 1}")
                part_key: Any = int(part)
                in_layer = True
            else:
                if part not in node or (in_layer and part == "kind"):
                    allowed = ", ".join(k for k in node if not (in_layer and k == "kind"))
                    raise SpecError(key, f"unknown key {part!r} at '{where}'; allowed: {allowed}")
                part_key = part
            if depth == len(parts) - 1:
                if isinstance(node[part_key], dict):
                    raise SpecError(key, f"is a section; set one of its fields: {', '.join(node[part_key])}")
                node[part_key] = _parse_value(key, text.strip(), node[part_key])
            else:
                node = node[part_key]
                in_layer = in_layer and not isinstance(node, list)
    return type(spec).from_dict(d)

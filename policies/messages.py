"""Pydantic validation errors -> located, ops-readable problems (which YAML node, what to write instead).

Used by `policies.loader`. Each error becomes (data path, "key" or "value", message): the loader turns
the path and anchor into a line and column from `policies.yamltree`.
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from policies.checks import PROBLEM_ERROR_TYPE

__all__ = ["Located", "allowed_fields", "block_checks_despite_errors", "describe", "locate_errors"]

Path = tuple[str | int, ...]
# (path shown to ops, path of the YAML node to point at, "key" or "value" of that node, message)
Located = tuple[Path, Path, str, str]


def describe(value: Any) -> str:
    """A short, YAML-flavoured description of a value for 'expected X, got Y' messages."""
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"'{value[:60]}…'" if len(value) > 60 else f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return [tp]


def _tag_of(model: Any) -> str | None:
    field = getattr(model, "model_fields", {}).get("type")
    if field is not None and get_origin(field.annotation) is Literal:
        return str(get_args(field.annotation)[0])
    return None


def _step(tp: Any, elem: str | int) -> tuple[Any, bool]:
    """The type reached from ``tp`` by loc element ``elem``; the flag is False if ``elem`` is not a data key
    (a union tag pydantic puts in the loc)."""
    members = _union_members(tp)
    if len(members) > 1:
        for member in members:
            if elem in (_tag_of(member), getattr(member, "__name__", None)):
                return member, False
        return None, False
    tp = members[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(elem))
        return (field.annotation if field is not None else None), True
    origin = get_origin(tp)
    if origin in (tuple, list):
        return _unwrap(get_args(tp)[0]), True
    if origin is dict:
        return _unwrap(get_args(tp)[1]), True
    return None, True


def _type_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> Any:
    """The annotation found by following a pydantic ``loc`` from ``root`` (None if lost on the way)."""
    tp: Any = root
    for elem in loc:
        tp, _ = _step(tp, elem)
        if tp is None:
            return None
    return tp


def allowed_fields(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the model found at ``loc`` (a pydantic loc), or [] if that is not one model."""
    tp = _type_at(root, loc)
    if tp is None:
        return []
    members = _union_members(tp)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return list(members[0].model_fields)
    return []


def _data_path(data: Any, loc: tuple[str | int, ...]) -> tuple[Path, bool]:
    """Follow ``loc`` through the YAML data: (the path of data keys matched, whether loc ends at a dict key).
    Elements that are not in the data are skipped: pydantic puts union tags in its locs."""
    path: list[str | int] = []
    node = data
    at_key = False
    for elem in loc:
        if elem == "[key]":
            at_key = True
        elif isinstance(node, dict) and isinstance(elem, str) and elem in node:  # noqa: SIM114 (mypy narrows each)
            path.append(elem)
            node = node[elem]
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            path.append(elem)
            node = node[elem]
    return tuple(path), at_key


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _did_you_mean(word: str, choices: list[str]) -> str:
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean '{lower[close[0]]}'?" if close else ""


def _bound(ctx: dict[str, Any], key: str) -> str:
    value = ctx.get(key)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _message(err: dict[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = describe(value)
    if kind in ("value_error", "assertion_error"):
        message = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        return message.replace("got NoneType", f"got {got}") if value is None else message
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (indented key: value lines), got {got}"
    if kind in ("list_type", "tuple_type", "set_type"):
        hint = f": write [{value}] for a list of one" if isinstance(value, (str, int, float)) else ""
        return f"expected a list, got {got}{hint}"
    if kind == "string_type":
        return f"expected text, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind == "literal_error":
        choices = _choices(str(ctx.get("expected", "")))
        hint = _did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return f"expected one of {', '.join(choices)}; got {got}{hint}"
    if kind == "union_tag_invalid":
        choices = _choices(str(ctx.get("expected_tags", "")))
        hint = _did_you_mean(str(ctx.get("tag")), choices)
        return f"unknown type '{ctx.get('tag')}': expected one of {', '.join(choices)}{hint}"
    if kind == "greater_than":
        return f"must be greater than {_bound(ctx, 'gt')}, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {_bound(ctx, 'ge')}, got {got}"
    if kind == "less_than":
        return f"must be less than {_bound(ctx, 'lt')}, got {got}"
    if kind == "less_than_equal":
        return f"must be at most {_bound(ctx, 'le')}, got {got}"
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} items"
    if kind in ("too_long", "string_too_long"):
        return f"too long: at most {ctx.get('max_length')} {'characters' if 'string' in kind else 'items'}"
    return str(err["msg"])


def locate_errors(root: type[BaseModel], data: Any, errors: list[dict[str, Any]]) -> list[Located]:
    """Translate ``ValidationError.errors()`` of ``root.model_validate(data)`` into located problems."""
    out: list[Located] = []
    locs = [tuple(e.get("loc", ())) for e in errors]
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err["type"] == "too_short" and any(other[: len(loc)] == loc and len(other) > len(loc) for other in locs):
            continue  # pydantic also counts a list as too short when its items failed: the item errors say it
        path, at_key = _data_path(data, loc)
        kind = err["type"]
        if kind == PROBLEM_ERROR_TYPE:
            for sub, message, anchor in (err.get("ctx") or {}).get("problems", ()):
                where, _ = _data_path(data, loc + tuple(sub))
                shown = (*path, *sub)
                # a field left at its default is not in the file: point at the key of its enclosing block
                out.append((shown, where, anchor if where == shown else "key", message))
            continue
        if kind == "missing":
            field = str(loc[-1]) if loc else "?"
            out.append(((*path, field), path, "key", f"required field '{field}' is missing"))
            continue
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = allowed_fields(root, loc[:-1])
            hint = _did_you_mean(key, allowed)
            if not hint and allowed:
                hint = f" (fields here: {', '.join(allowed)})"
            out.append((path, path, "key", f"unknown field '{key}'{hint}"))
            continue
        if kind == "union_tag_not_found":
            field = str((err.get("ctx") or {}).get("discriminator", "type")).strip("'")
            tags = [t for t in (_tag_of(m) for m in _union_members(_type_at(root, loc))) if t]
            choices = f": one of {', '.join(tags)}" if tags else ""
            out.append(((*path, field), path, "key", f"required field '{field}' is missing{choices}"))
            continue
        anchor = "key" if at_key else "value"
        out.append((path, path, anchor, _message(err)))
    return out


def block_checks_despite_errors(root: type[BaseModel], data: Any, errors: list[dict[str, Any]]) -> list[Located]:
    """The checks a block runs across its fields (min <= max, timeout < interval, ...) for blocks where
    pydantic skipped them because one field was bad: re-validate each such block without its bad fields.
    Results that could come from a dropped field's default are left out (they would mislead)."""
    dropped: dict[tuple[str | int, ...], set[str]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err["type"] == PROBLEM_ERROR_TYPE:
            continue
        for cut in range(1, len(loc)):  # every enclosing block below the document itself
            if isinstance(loc[cut], str) and loc[cut] != "[key]":
                dropped.setdefault(loc[:cut], set()).add(loc[cut])
    out: list[Located] = []
    for loc, fields in dropped.items():
        members = _union_members(_type_at(root, loc))
        model = members[0] if len(members) == 1 else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        path, _ = _data_path(data, loc)
        block = data
        for elem in path:
            block = block[elem]
        if not isinstance(block, dict) or path == ():
            continue
        try:
            model.model_validate({k: v for k, v in block.items() if k not in fields})
        except ValidationError as exc:
            again = [dict(e) for e in exc.errors() if e["type"] == PROBLEM_ERROR_TYPE and not e["loc"]]
            for shown, where, anchor, message in locate_errors(model, {k: v for k, v in block.items()}, again):
                if any(f in message or f in shown for f in fields):
                    continue
                out.append(((*path, *shown), (*path, *where), anchor, message))
    return out

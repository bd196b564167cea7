"""pydantic's validation errors rewritten as ``FILE:LINE: key.path: message (got VALUE)`` lines."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ValidationError

from backprop_cli.config.components import ACTIVATION_NAMES, LOSS_NAMES, OPTIMIZER_NAMES, SCHEDULER_NAMES

from backprop_cli.config.schema import DATA_KIND_NAMES, Config

from backprop_cli.config.base import NO_VALUE, LocatedError
from backprop_cli.config.yamlfile import dotted

_TAGS = frozenset(ACTIVATION_NAMES + LOSS_NAMES + OPTIMIZER_NAMES + SCHEDULER_NAMES + DATA_KIND_NAMES)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) is Union:
        return [_strip_annotated(a) for a in typing.get_args(tp)]
    return [tp]


def _tag_of(model: Any) -> Optional[str]:
    for field in ("name", "kind"):
        f = getattr(model, "model_fields", {}).get(field)
        if f is not None and typing.get_origin(f.annotation) is Literal:
            return typing.get_args(f.annotation)[0]
    return None


def _descend(tp: Any, part: Any) -> Any:
    """The type that ``part`` of a pydantic error location selects inside ``tp``."""
    for member in _union_members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            if part in member.model_fields:
                return member.model_fields[part].annotation
            if _tag_of(member) == part:
                return member
        elif typing.get_origin(member) is list and isinstance(part, int):
            return typing.get_args(member)[0]
    return None


def _type_at(root: Any, loc: tuple) -> Any:
    tp = root
    for part in loc:
        tp = _descend(tp, part)
        if tp is None:
            return None
    return tp


def _allowed_keys(tp: Any) -> list[str]:
    keys: list[str] = []
    for member in _union_members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            keys += [k for k in member.model_fields if k not in keys]
    return keys


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop the discriminator tags pydantic puts in locations (``optimizer.adam.lr`` → ``optimizer.lr``)."""
    out: list = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif isinstance(part, str) and (cur == part or (isinstance(cur, dict) and part in _TAGS)):
            continue
        else:
            cur = None
        out.append(part)
    return tuple(out)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Where:
    """Maps a key path to ``FILE:LINE`` or ``--set``, and a value to the text the user wrote."""

    def __init__(self, source: str, lines: dict, raw: dict, overridden: dict):
        self.source, self.lines, self.raw, self.overridden = source, lines, raw, overridden

    def location(self, path: tuple) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return "--set"
        if path and path not in self.lines and any(o[:len(path)] == path for o in self.overridden):
            return "--set"  # a key that only an override wrote (`--set optimzer.lr=0.1`)
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source

    def got(self, path: tuple, value: Any) -> str:
        text = None
        if path in self.overridden:
            text = self.overridden[path]
        elif any(path[:n] in self.overridden for n in range(len(path))):
            text = None
        elif path in self.raw and not isinstance(value, (dict, list)):
            text = self.raw[path]
        if text is None or not text.isprintable() or len(text) > 60:
            return _show(value)  # repr: one line, control characters escaped
        return text

    def line(self, path: tuple, message: str, value: Any = NO_VALUE) -> str:
        got = "" if value is NO_VALUE else f" (got {self.got(path, value)})"
        return f"{self.location(path)}: {dotted(path)}: {message}{got}"


def _typo_pairs(errors: list[dict]) -> dict[tuple, str]:
    """Unknown keys that look like a missing required key next to them: loc → the key meant."""
    missing: dict[tuple, list[str]] = {}
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
        elif e["type"] == "value_error" and isinstance((e.get("ctx") or {}).get("error"), LocatedError):
            for sub, message, _ in e["ctx"]["error"].found:
                if message.startswith("required key is missing"):
                    full = tuple(e["loc"]) + sub
                    missing.setdefault(full[:-1], []).append(str(full[-1]))
    pairs = {}
    for e in errors:
        if e["type"] == "extra_forbidden":
            loc = tuple(e["loc"])
            close = difflib.get_close_matches(str(loc[-1]), missing.get(loc[:-1], []), n=1, cutoff=0.6)
            if close:
                pairs[loc] = close[0]
    return pairs


# What a section of the config is, for the line that says one is not a mapping.
SECTION_EXAMPLES = {
    ("model",): "of the network's sizes, e.g. {input_size: 4, hidden_size: 16, output_size: 1}",
    ("data",): "saying where the rows come from, e.g. {kind: csv, path: rows.csv, target: y}",
    ("train",): "of the run's length and policies, e.g. {steps: 200}",
    ("optimizer",): "of a name and its options, e.g. {name: adam, lr: 0.001} (or a name alone: adam)",
    ("distributed",): "such as {backend: gloo}",
    ("compare",): "such as {optimizers: [sgd, adam]}",
}


def messages(err: ValidationError, data: Any, where: Where, root: Any = Config) -> list[str]:
    """One line per problem, in pydantic's order; a typo and the missing key it explains are one line."""
    out: list[str] = []
    errors = err.errors()
    typos = _typo_pairs(errors)
    explained = {loc[:-1] + (meant,) for loc, meant in typos.items()}
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] == "missing" and loc in explained:
            continue  # reported as the typo that caused it
        kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
        if kind == "value_error" and isinstance(ctx.get("error"), LocatedError):
            base = _clean_loc(loc, data)
            for sub, message, val in ctx["error"].found:
                if base + sub not in explained:
                    out.append(where.line(base + sub, message, val))
            continue
        path = _clean_loc(loc, data)
        msg = e["msg"].replace("Input should be", "must be")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(_type_at(root, loc[:-1]))
            guess = typos.get(loc) or next(iter(difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.75)), None)
            hint = f"did you mean {guess}? " if guess else ""
            msg, value = f"unknown key; {hint}allowed keys: {', '.join(allowed)}", NO_VALUE
        elif kind == "missing":
            msg, value = "required key is missing", NO_VALUE
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            field = ctx.get("discriminator", "'name'").strip("'")
            names = [t for t in (_tag_of(m) for m in _union_members(_type_at(root, loc))) if t]
            path = path + (field,)
            what = "data kind" if field == "kind" else str(path[-2]) if len(path) > 1 else field
            if kind == "union_tag_invalid":
                msg, value = f"unknown {what}; expected one of: {', '.join(names)}", ctx.get("tag")
            else:
                msg, value = f"required key is missing; one of: {', '.join(names)}", NO_VALUE
        elif kind in ("model_attributes_type", "model_type"):  # pydantic: "a valid dictionary or instance of ..."
            msg = "expected a mapping" + (f" {SECTION_EXAMPLES[path]}" if path in SECTION_EXAMPLES else "")
        elif kind == "literal_error":
            msg = f"expected one of: {ctx.get('expected', '')}"
        elif kind == "value_error":
            msg = str(ctx.get("error", msg))
        elif kind == "string_pattern_mismatch" and path == ("device",):
            msg = "expected auto, cpu, cuda, cuda:N or mps"
        elif kind in ("int_type", "float_type") and isinstance(value, bool):
            msg = f"{msg}, not a boolean"
        elif kind == "int_type" and isinstance(value, float):
            msg = f"{msg}, not a float"
        out.append(where.line(path, msg, value))
    return out

"""``--set KEY.PATH=VALUE``: overrides applied to the parsed YAML before validation."""

from __future__ import annotations

from typing import Any

from backprop_cli.config.yamlfile import dotted, parse_value, short
from backprop_cli.errors import ConfigError


class Override(str):
    """A ``KEY.PATH=VALUE`` override that a command-line option stands for (``--steps 3`` is
    ``train.steps=3``): messages name the option the user typed."""

    origin: str

    def __new__(cls, spec: str, origin: str) -> "Override":
        self = super().__new__(cls, spec)
        self.origin = origin
        return self


def origin_of(spec: str) -> str:
    """How the user gave an override: ``--set KEY=VALUE``, or the option it stands for."""
    return getattr(spec, "origin", None) or f"--set {short(spec.strip())}"


def apply_override(data: dict, spec: str) -> tuple[tuple, str]:
    """Apply one ``key.path=value`` override in place; returns the path and the value's text."""
    if "=" not in spec:
        raise ConfigError(f"--set {short(spec)}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.1")
    key, _, text = spec.partition("=")
    key = key.strip()
    shown = short(key)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {short(spec)}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.1")
    path = _space_path(data, tuple(int(p) if p.isascii() and p.isdigit() and len(p) <= 18 else p
                                   for p in key.split(".")))
    try:
        value = parse_value(text)
    except ConfigError as e:
        why = e.problems[0].split(": ", 1)[-1].removeprefix("(top level): ")
        raise ConfigError(f"--set {shown}: cannot parse value {short(repr(text))}: {why}") from None
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = node[part] if _has(node, part) else None
        if isinstance(nxt, str) and isinstance(path[i + 1], str):
            nxt = {"name": nxt}  # `loss: huber` + `--set loss.delta=2`
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, (dict, list)):
            raise ConfigError(f"--set {shown}: {dotted(path[: i + 1])} is not a mapping (got {short(repr(nxt))})")
        _put(node, part, nxt, shown)
        node = nxt
    _put(node, path[-1], value, shown)
    return path, text.strip()


SPACE_FIELDS = ("low", "high", "log", "step", "choices")


def _space_path(data: dict, path: tuple) -> tuple:
    """``tune.space`` is keyed by dotted config paths: ``tune.space.optimizer.lr.low`` names the field
    ``low`` of the entry ``optimizer.lr``. The entry is the longest run of parts that names an entry the
    file already has; otherwise everything before a field name (``low``, ``high``, ``log``, ``step``,
    ``choices``), or the whole rest for a new entry given whole (``tune.space.optimizer.lr={low: …}``)."""
    if len(path) < 4 or path[:2] != ("tune", "space"):
        return path
    rest = path[2:]
    tune = data.get("tune") if isinstance(data, dict) else None
    space = tune.get("space") if isinstance(tune, dict) else None
    entry = len(rest)
    known = [end for end in range(len(rest), 0, -1) if isinstance(space, dict) and _joined(rest[:end]) in space]
    fields = [i for i, part in enumerate(rest) if i and part in SPACE_FIELDS]
    if known:
        entry = known[0]
    elif fields:
        entry = fields[0]
    return ("tune", "space", _joined(rest[:entry])) + rest[entry:]


def _joined(parts: tuple) -> str:
    return ".".join(str(p) for p in parts)


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _put(node: Any, part: Any, value: Any, key: str) -> None:
    if isinstance(node, dict):
        node[part] = value
    elif isinstance(part, int) and 0 <= part <= len(node):
        if part == len(node):
            node.append(value)
        else:
            node[part] = value
    else:
        raise ConfigError(f"--set {key}: no list item {short(repr(part))} here (the list has {len(node)} items)")


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``lr=0.1,betas=[0.9,0.99]`` → two items."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]

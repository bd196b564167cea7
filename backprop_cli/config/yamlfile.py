"""YAML in: safe_load semantics, YAML 1.2 floats, and the line of every key for error messages.

Aliases are followed as data, never expanded without bound: a document that would expand to more
than :data:`MAX_NODES` nodes (a "billion laughs"), refers to itself, or nests deeper than
:data:`MAX_DEPTH` is refused with one line; so is an integer literal longer than
:data:`~backprop_cli.limits.MAX_INT_CHARS` characters, before Python converts it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from backprop_cli.errors import ConfigError
from backprop_cli.limits import MAX_INT_CHARS

MAX_CONFIG_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 10_000  # a config holds a few dozen values; a long list of column names a few hundred
_INT_TAG = "tag:yaml.org,2002:int"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that reads YAML 1.2 floats such as ``1e-3`` as numbers, not strings. libyaml's parser
    where PyYAML has it (the same nodes, about 10x faster: a config of a few thousand columns that ``init``
    wrote parses in well under a second), else PyYAML's own."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def short(text: str, limit: int = 60) -> str:
    """``text`` for an error line: at most ``limit`` characters (a value may be a megabyte long)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def dotted(path: tuple) -> str:
    """A key path as the user writes it (``optimizer.betas.0``), each key shortened for a message."""
    return ".".join(short(str(p), 40) for p in path) if path else "(top level)"


class Parsed:
    """One YAML document: its data, the line of each key path, and each scalar's source text."""

    def __init__(self, data: Any, lines: dict[tuple, int], raw: dict[tuple, str], problems: list[str]):
        self.data, self.lines, self.raw, self.problems = data, lines, raw, problems


def parse_yaml(text: str, where: str) -> Parsed:
    """Parse one YAML document, or raise one ConfigError naming ``where`` (and the line)."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {' '.join(str(e).split())}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Parsed(None, {}, {}, [])
        index = _Index(where)
        index.walk(node, ())
        return Parsed(loader.construct_document(node), index.lines, index.raw, index.problems)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        msg = " ".join(str(x) for x in (e.context, e.problem) if x).replace("\t", "\\t")
        raise ConfigError(f"{where}{line}: YAML syntax error: {msg}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nests too deeply (a config needs at most {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


class _Index:
    """Walks the node graph as the data will be seen (aliases followed), recording key lines."""

    def __init__(self, where: str):
        self.where = where
        self.lines: dict[tuple, int] = {}
        self.raw: dict[tuple, str] = {}
        self.problems: list[str] = []
        self.count = 0
        self.open: set[int] = set()

    def walk(self, node, path: tuple) -> None:
        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_NODES:
            raise ConfigError(f"{self.where}:{line}: the document expands to more than {MAX_NODES:,} values "
                              "(aliases that repeat aliases?); a config is far smaller")
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"{self.where}:{line}: {dotted(path[:3])}...: nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.open:
            raise ConfigError(f"{self.where}:{line}: {dotted(path)}: an alias refers to a value that contains it")
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
                raise ConfigError(f"{self.where}:{line}: {dotted(path)}: an integer of {len(node.value):,} characters; "
                                  f"a config takes integers of at most {MAX_INT_CHARS} (got {node.value[:20]}...)")
            self.raw[path] = f"'{node.value}'" if node.style in ("'", '"') else node.value
            return
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                kline = key_node.start_mark.line + 1
                if key in seen:
                    self.problems.append(f"{self.where}:{kline}: {dotted(path + (key,))}: duplicate key "
                                         f"(first given on line {seen[key]})")
                seen.setdefault(key, kline)
                self.lines[path + (key,)] = kline
                self.walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.walk(item, path + (i,))
        self.open.discard(id(node))


def parse_value(text: str, where: str = "--set") -> Any:
    """Parse a command-line value as YAML (``0.1`` → float, ``true`` → bool, ``[1, 2]`` → list)."""
    return parse_yaml(text, where).data


def read_text(path: Path) -> str:
    """The config file's text: a regular UTF-8 file, of which at most MAX_CONFIG_BYTES are read."""
    from backprop_cli.io.files import read_text_capped

    return read_text_capped(path, MAX_CONFIG_BYTES, "file", ConfigError)

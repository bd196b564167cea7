"""From a file (or plain data) and ``--set`` overrides to a validated :class:`Config`.

Every problem is collected and raised once as a :class:`ConfigError` whose lines read
``FILE:LINE: key.path: message (got VALUE)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from backprop_cli.config.messages import Where, messages
from backprop_cli.config.overrides import apply_override, origin_of, split_top_level
from backprop_cli.config.schema import Config, OptimizerOnly
from backprop_cli.config.yamlfile import dotted, parse_value, parse_yaml, read_text, short
from backprop_cli.errors import ConfigError


def validate(data: Any, *, source: str = "<config>", base_dir: Optional[Path] = None,
             overrides: Optional[list[str]] = None, lines: Optional[dict] = None,
             raw: Optional[dict] = None) -> Config:
    """Validate plain data (plus overrides) into a :class:`Config`, or raise one ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{source}:1: expected a mapping of config sections at the top level (got a {kind})")
    overridden: dict[tuple, str] = {}
    origins: dict[tuple, str] = {}
    for spec in overrides or []:
        path, text = apply_override(data, spec)
        overridden[path] = text
        origins[path] = origin_of(spec)
    _clear_replaced(data, overridden)
    where = Where(source, lines or {}, raw or {}, overridden)
    both = _both_given(data, origins, where)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(both + messages(e, data, where)) from None
    except RecursionError:
        raise ConfigError(f"{source}: the config nests too deeply") from None
    if both:
        raise ConfigError(both)
    cfg._base_dir = base_dir or Path.cwd()
    cfg._source = source
    return cfg


# Keys that say the same thing two ways: an override of one clears the other from the file (`--set
# train.steps=N` on a file with train.epochs); only both given in the same place are an error.
REPLACES = {("train", "steps"): ("train", "epochs"), ("train", "epochs"): ("train", "steps"),
            ("model", "hidden_sizes"): ("model", "hidden_size"), ("model", "hidden_size"): ("model", "hidden_sizes")}


def _both_given(data: dict, origins: dict, where: Where) -> list[str]:
    """One line per pair of keys that say the same thing and are both set (not null) after the overrides: both in
    the file, or both on the command line. Each key is named with where it came from (``FILE:LINE``, the
    ``--set`` or the option); the second is taken out, so that the schema does not report the pair again."""
    out = []
    for first, second in PAIRS:
        section = data.get(first[0])
        if not isinstance(section, dict) or not all(_plausible(section.get(k[1]), k) for k in (first, second)):
            continue  # one is unset, or of the wrong type: the schema names that
        cli = [any(o[:len(k)] == k for o in origins) for k in (first, second)]
        if cli[0] != cli[1]:  # `--set model.hidden_sizes.0=8` on a file with hidden_size: the override replaces
            section.pop((second if cli[0] else first)[1])
            continue
        named = [f"{dotted(k)} ({origins.get(k) or where.location(k)})" for k in (first, second)]
        place = "both on the command line; give one" if cli[1] else \
            "both in the file; remove one (an override of one replaces the other)"
        out.append(where.line(second, f"give {dotted(first)} or {dotted(second)}, not both: {named[0]} and "
                                      f"{named[1]} are {place}", section[second[1]]))
        section.pop(second[1])
    return out


PAIRS = ((("train", "steps"), ("train", "epochs")), (("model", "hidden_size"), ("model", "hidden_sizes")))


def _plausible(value: Any, key: tuple) -> bool:
    """A value of the key's type (an integer; a list for hidden_sizes), however out of bounds."""
    if key[1] == "hidden_sizes":
        return isinstance(value, list)
    return isinstance(value, int) and not isinstance(value, bool)


def _clear_replaced(data: dict, overridden: dict) -> None:
    for path in list(overridden):
        other = REPLACES.get(path)
        if other is None or other in overridden:
            continue
        section = data.get(path[0])
        if isinstance(section, dict) and section.get(path[1]) is not None:
            section.pop(other[1], None)


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Read, parse and validate a config file; every problem is reported in one ConfigError."""
    return load_text(read_text(Path(path)), path, overrides)


def load_text(text: str, path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Parse and validate config text as if it were the file ``path`` (relative paths from its folder)."""
    path = Path(path)
    doc = parse_yaml(text, str(path))
    if doc.data is None:
        raise ConfigError(f"{path}: the file is empty; expected config sections such as model and data")
    try:
        cfg = validate(doc.data, source=str(path), base_dir=path.resolve().parent, overrides=overrides,
                       lines=doc.lines, raw=doc.raw)
    except ConfigError as e:
        raise ConfigError(doc.problems + e.problems) from None
    if doc.problems:
        raise ConfigError(doc.problems)
    return cfg


def parse_optimizer(text: str) -> BaseModel:
    """``adam``, ``adam:lr=1e-3``, ``sgd:lr=0.1,momentum=0.9`` → a validated optimizer spec.

    Values are parsed as YAML; problems read like the config's (``optimizer.lr: must be ...``).
    """
    where = f"--optimizer {short(text)}"
    name, _, rest = text.partition(":")
    data: dict[str, Any] = {"name": name.strip()}
    for item in split_top_level(rest):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"{where}: expected NAME or NAME:KEY=VALUE,KEY=VALUE (e.g. sgd:lr=0.1,momentum=0.9)")
        if key in data:
            raise ConfigError(f"{where}: optimizer.{short(key, 40)}: given twice")
        try:
            data[key] = parse_value(value, where)
        except ConfigError:
            raise ConfigError(f"{where}: optimizer.{short(key, 40)}: cannot parse {short(repr(value.strip()))} as a YAML value") from None
    try:
        return OptimizerOnly.model_validate({"optimizer": data}).optimizer
    except ValidationError as e:
        raise ConfigError(messages(e, {"optimizer": data}, Where(where, {}, {}, {}), OptimizerOnly)) from None

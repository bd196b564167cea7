"""The ``tune:`` section: what ``backprop tune`` searches, and how. No torch, no Optuna here.

``space`` is keyed by dotted config paths (``optimizer.lr``); each entry is a range
(``{low, high, log, step}``: integers when both bounds, and the step, are integers) or a list of
``choices``. Besides its own checks (a range with low below high, a log range above 0, choices of one
type), every entry is checked against the rest of the config (:func:`space_problems`, called by
:class:`~backprop_cli.config.schema.Config`'s validator): the path must be a key of the config, and
each bound and each choice must be a value that key's own validation accepts — the config is built
with the value substituted, exactly as a trial will build it.
"""

from __future__ import annotations

import copy
import difflib
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backprop_cli.limits import MAX_COUNT

# Every metric a trial can report: (the summary's key, the task it needs, the direction)
METRICS = {
    "val_loss": ("loss", None, "minimize"),
    "val_accuracy": ("accuracy", "classification", "maximize"),
    "val_f1_macro": ("f1_macro", "classification", "maximize"),
    "val_mae": ("mae", "regression", "minimize"),
    "val_r2": ("r2", "regression", "maximize"),
}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
MAX_TRIALS = MAX_COUNT  # the bound of every count in the config
MAX_GRID = 100_000  # grid points a grid sampler may enumerate

Number = Union[int, float]
Choice = Union[bool, int, float, str, None]


class _Strict(BaseModel):
    """As the other sections (schema.Strict): unknown keys are errors, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)


def _located(found: list) -> Exception:
    from backprop_cli.config.base import LocatedError

    return LocatedError(found)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


class Param(_Strict):
    """One searched key: ``{low, high, log, step}`` or ``{choices: [...]}``."""

    low: Optional[Number] = None
    high: Optional[Number] = None
    log: bool = False
    step: Optional[Number] = None
    choices: Optional[list[Choice]] = None

    @field_validator("choices", mode="before")
    @classmethod
    def _scalars(cls, v: Any) -> Any:
        """One message for a choice that is not a scalar, not one per member of the union."""
        if isinstance(v, list):
            for c in v:
                if not (c is None or isinstance(c, (bool, int, float, str))) or (isinstance(c, float) and c != c):
                    raise ValueError(f"choices are numbers, strings, booleans or null (got {c!r})"[:200])
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "Param":
        from backprop_cli.config.base import NO_VALUE

        found: list = []
        ranged = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
        if self.choices is not None:
            for key in ranged:
                found.append(((key,), "give choices, or a range (low, high, log, step), not both", getattr(self, key)))
            if not self.choices:
                found.append((("choices",), "nothing to choose from: give at least one value", NO_VALUE))
            kinds = [_kind(c) for c in self.choices]
            if len(set(kinds)) > 1:
                found.append((("choices",), f"choices of mixed types ({', '.join(dict.fromkeys(kinds))}): give "
                              "values of one type", self.choices))
            seen: list = []
            for i, c in enumerate(self.choices):
                if any(c == s and type(c) is type(s) for s in seen):
                    found.append((("choices", i), "given twice", c))
                seen.append(c)
        else:
            for key in ("low", "high"):
                if getattr(self, key) is None:
                    found.append(((key,), "required key is missing (or give choices: [...])", NO_VALUE))
            lo, hi = self.low, self.high
            if lo is not None and hi is not None and not lo < hi:
                found.append((("high",), f"must be greater than low ({lo})", hi))
            if self.log and lo is not None and lo <= 0:
                found.append((("low",), "a log range needs low > 0", lo))
            if self.step is not None:
                if self.step <= 0:
                    found.append((("step",), "must be greater than 0", self.step))
                elif self.log:
                    found.append((("step",), "give log or step, not both (Optuna samples one or the other)",
                                  self.step))
                elif lo is not None and hi is not None and lo < hi:
                    span = (Decimal(repr(hi)) - Decimal(repr(lo))) / Decimal(repr(self.step))
                    if span != span.to_integral_value():
                        found.append((("high",), f"high - low must be a whole number of steps ({self.step})", hi))
                if isinstance(lo, int) and isinstance(hi, int) and not isinstance(self.step, int):
                    found.append((("step",), "integer bounds take an integer step", self.step))
        if found:
            raise _located(found)
        return self

    @property
    def is_int(self) -> bool:
        """A range of integers: both bounds (and the step, if given) are integers."""
        return (self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)
                and (self.step is None or isinstance(self.step, int)))

    def values(self) -> list:
        """Every value a grid enumerates: the choices, or the range by its step (1 for integers)."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            return list(range(self.low, self.high + 1, self.step or 1))
        lo, step = Decimal(repr(self.low)), Decimal(repr(self.step))
        n = int((Decimal(repr(self.high)) - lo) / step)
        return [float(lo + i * step) for i in range(n + 1)]

    def grid_size(self) -> Optional[int]:
        """How many values a grid takes from this entry (None: a continuous range, no grid)."""
        if self.choices is not None:
            return len(self.choices)
        if self.is_int:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.step is None:
            return None
        return int((Decimal(repr(self.high)) - Decimal(repr(self.low))) / Decimal(repr(self.step))) + 1

    def plain(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


class TuneConfig(_Strict):
    """``tune:``: the metric to optimize (its direction follows from it), how many trials, the sampler
    (seeded from the config's ``seed``), the pruner, and the space."""

    metric: Literal["val_loss", "val_accuracy", "val_f1_macro", "val_mae", "val_r2"] = "val_loss"
    trials: Annotated[int, Field(gt=0, le=MAX_TRIALS)] = 20
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    space: dict[str, Param]

    @field_validator("space", mode="before")
    @classmethod
    def _something_to_search(cls, v: Any) -> Any:
        if isinstance(v, dict) and not v:
            raise ValueError("nothing to search: give at least one key, e.g. optimizer.lr: "
                             "{low: 1.0e-4, high: 0.1, log: true}")
        return v

    @property
    def direction(self) -> str:
        return METRICS[self.metric][2]

    def model_dump_space(self) -> dict:
        return {k: p.plain() for k, p in self.space.items()}


def key_path(key: str) -> tuple:
    """``optimizer.betas.0`` → ``("optimizer", "betas", 0)``, as ``--set`` reads a path."""
    return tuple(int(p) if p.isascii() and p.isdigit() and len(p) <= 18 else p for p in key.split("."))


def _leaf_paths(data: Any, prefix: tuple = ()) -> list[str]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _leaf_paths(v, prefix + (k,)) if isinstance(v, dict) else [".".join(map(str, prefix + (k,)))]
    return out


def _is_key(cfg: BaseModel, path: tuple) -> bool:
    """Whether ``path`` names a key of this config: a field of each section in turn (of the component
    the config has chosen, for a tagged union), an index of a list, or a field of an optional section
    that is not set (``train.early_stopping.patience``)."""
    from backprop_cli.config.messages import _descend

    obj: Any = cfg
    tp: Any = type(cfg)
    for part in path:
        if isinstance(obj, BaseModel):
            fields = type(obj).model_fields
            if part not in fields:
                return False
            tp, obj = fields[part].annotation, getattr(obj, part)
        elif isinstance(obj, list):
            if not (isinstance(part, int) and 0 <= part < len(obj)):
                return False
            tp, obj = None, obj[part]
        elif obj is None and tp is not None:
            tp = _descend(tp, part)
            if tp is None:
                return False
        else:
            return False
    return True


def _substituted(data: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(data)
    node: Any = out
    for part in path[:-1]:
        nxt = node[part] if (isinstance(node, dict) and part in node) or (isinstance(node, list) and
                                                                          isinstance(part, int) and part < len(node)) else None
        if nxt is None:
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value
    return out


def _refusals(root: type, data: dict) -> list[str]:
    """What the config's validation says about ``data`` (lines without a file: ``key: message``)."""
    from backprop_cli.config.messages import Where, messages

    try:
        root.model_validate(data)
    except ValidationError as e:
        return [line.removeprefix(": ") for line in messages(e, data, Where("", {}, {}, {}))]
    return []


def space_problems(cfg: BaseModel) -> list[tuple]:
    """The checks of ``tune:`` that need the rest of the config: ``[(loc, message, value), ...]``."""
    from backprop_cli.config.base import NO_VALUE
    from backprop_cli.config.components import is_classification

    tune: TuneConfig = cfg.tune
    found: list[tuple] = []
    if cfg.data.validation is None:
        found.append((("tune",), "tune needs validation data (each trial's value is a validation metric): set "
                      "data.validation to a fraction (e.g. 0.2) or a CSV file", NO_VALUE))
    task = "classification" if is_classification(cfg.loss) else "regression"
    need = METRICS[tune.metric][1]
    if need is not None and need != task:
        fits = ", ".join(m for m, (_, t, _) in METRICS.items() if t in (None, task))
        found.append((("tune", "metric"), f"{tune.metric} is a {need} metric and loss {cfg.loss.name} is {task}; "
                      f"expected one of: {fits}", tune.metric))
    base = {k: v for k, v in cfg.plain().items() if k != "tune"}
    root = type(cfg)
    refused_already = set(_refusals(root, base))
    keys = _leaf_paths(base)
    for key, param in tune.space.items():
        where = ("tune", "space", key)
        path = key_path(key)
        if not key or any(p == "" for p in path) or path[0] == "tune" or not _is_key(cfg, path):
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else "; keys are written as --set writes them, e.g. optimizer.lr"
            why = "tune's own keys are not searched" if path and path[0] == "tune" else "not a key of this config"
            found.append((where, why + hint, NO_VALUE))
            continue
        if param.choices is not None:
            tried = [(("choices", i), c) for i, c in enumerate(param.choices)]
        else:
            tried = [(("low",), param.low), (("high",), param.high)]
        for sub, value in tried:
            refused = [r for r in _refusals(root, _substituted(base, path, value)) if r not in refused_already]
            if refused:
                found.append((where + sub, f"the config refuses it: {refused[0]}", NO_VALUE))
        if tune.sampler == "grid" and param.grid_size() is None:
            found.append((where, "sampler grid needs choices, integer bounds or a step for every key", NO_VALUE))
    if tune.sampler == "grid" and not any(loc[:2] == ("tune", "space") for loc, _, _ in found):
        size = 1
        for param in tune.space.values():
            size *= param.grid_size() or 1
        if size > MAX_GRID:
            found.append((("tune", "space"), f"the grid has {size:,} points; at most {MAX_GRID:,}", NO_VALUE))
    return found

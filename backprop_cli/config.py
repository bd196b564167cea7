"""The YAML config: pydantic models, loading with line numbers, ``--set`` overrides.

Every problem is collected and raised once as a :class:`ConfigError` whose lines read
``FILE:LINE: key.path: message (got VALUE)``. This module never imports torch.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from backprop_cli.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000

# --------------------------------------------------------------------------- models


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=False)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Betas = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]


def _name_only(value: Any, default: str) -> Any:
    """``loss: mse`` means ``loss: {name: mse}``; a mapping without ``name`` gets the default one."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value:
        return {"name": default, **value}
    return value


# ---- activations


class Relu(Strict):
    name: Literal["relu"]


class Tanh(Strict):
    name: Literal["tanh"]


class Sigmoid(Strict):
    name: Literal["sigmoid"]


class Gelu(Strict):
    name: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"


class LeakyRelu(Strict):
    name: Literal["leaky_relu"]
    negative_slope: float = 0.01


class Identity(Strict):
    name: Literal["identity"]


ActivationSpec = Annotated[
    Union[Relu, Tanh, Sigmoid, Gelu, LeakyRelu, Identity], Field(discriminator="name")
]
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity")


class ModelConfig(Strict):
    input_size: PositiveInt
    hidden_size: PositiveInt
    output_size: PositiveInt
    activation: ActivationSpec = Field(default_factory=lambda: Relu(name="relu"))
    bias: bool = True

    @field_validator("activation", mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return _name_only(v, "relu")


# ---- losses

Reduction = Literal["mean", "sum"]


class MSELoss(Strict):
    name: Literal["mse"]
    reduction: Reduction = "mean"


class L1Loss(Strict):
    name: Literal["l1"]
    reduction: Reduction = "mean"


class HuberLoss(Strict):
    name: Literal["huber"]
    delta: PositiveFloat = 1.0
    reduction: Reduction = "mean"


class SmoothL1Loss(Strict):
    name: Literal["smooth_l1"]
    beta: NonNegFloat = 1.0
    reduction: Reduction = "mean"


class CrossEntropyLoss(Strict):
    name: Literal["cross_entropy"]
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    reduction: Reduction = "mean"


class BCEWithLogitsLoss(Strict):
    name: Literal["bce_with_logits"]
    reduction: Reduction = "mean"


LossSpec = Annotated[
    Union[MSELoss, L1Loss, HuberLoss, SmoothL1Loss, CrossEntropyLoss, BCEWithLogitsLoss],
    Field(discriminator="name"),
]
LOSSES = ("mse", "l1", "huber", "smooth_l1", "cross_entropy", "bce_with_logits")
CLASSIFICATION_LOSSES = ("cross_entropy", "bce_with_logits")

# ---- optimizers (defaults are torch's)


class SGD(Strict):
    name: Literal["sgd"]
    lr: PositiveFloat = 1e-3
    momentum: NonNegFloat = 0.0
    dampening: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    nesterov: bool = False
    maximize: bool = False

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, v: bool, info: ValidationInfo) -> bool:
        if v and (info.data.get("momentum", 0.0) <= 0 or info.data.get("dampening", 0.0) != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return v


class Adam(Strict):
    name: Literal["adam"]
    lr: PositiveFloat = 1e-3
    betas: Betas = [0.9, 0.999]
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegFloat = 0.0
    amsgrad: bool = False
    maximize: bool = False


class AdamW(Strict):
    name: Literal["adamw"]
    lr: PositiveFloat = 1e-3
    betas: Betas = [0.9, 0.999]
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegFloat = 1e-2
    amsgrad: bool = False
    maximize: bool = False


class RMSprop(Strict):
    name: Literal["rmsprop"]
    lr: PositiveFloat = 1e-2
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.99
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegFloat = 0.0
    momentum: NonNegFloat = 0.0
    centered: bool = False
    maximize: bool = False


class Adagrad(Strict):
    name: Literal["adagrad"]
    lr: PositiveFloat = 1e-2
    lr_decay: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    initial_accumulator_value: NonNegFloat = 0.0
    eps: PositiveFloat = 1e-10
    maximize: bool = False


OptimizerSpec = Annotated[
    Union[SGD, Adam, AdamW, RMSprop, Adagrad], Field(discriminator="name")
]
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def optimizer_hyperparams(spec: BaseModel) -> dict[str, Any]:
    """The optimizer's keyword arguments (everything but its name)."""
    out = spec.model_dump(exclude={"name"})
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


# ---- data


class SyntheticData(Strict):
    kind: Literal["synthetic"]
    samples: PositiveInt = 256
    targets: Literal["random", "teacher", "classes"] = "teacher"
    noise: NonNegFloat = 0.1
    batch_size: PositiveInt = 32
    shuffle: bool = True

    @field_validator("batch_size")
    @classmethod
    def _fits(cls, v: int, info: ValidationInfo) -> int:
        samples = info.data.get("samples")
        if samples is not None and v > samples:
            raise ValueError(f"batch_size is larger than data.samples ({samples})")
        return v


class CsvData(Strict):
    kind: Literal["csv"]
    path: Annotated[str, Field(min_length=1)]
    target: Union[str, Annotated[list[str], Field(min_length=1)]]
    features: Optional[Annotated[list[str], Field(min_length=1)]] = None
    batch_size: PositiveInt = 32
    shuffle: bool = True

    @property
    def target_columns(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)


DataSpec = Annotated[Union[SyntheticData, CsvData], Field(discriminator="kind")]


# ---- training


class TrainConfig(Strict):
    steps: Optional[PositiveInt] = None
    epochs: Optional[PositiveInt] = None
    log_every: Optional[PositiveInt] = None
    clip_grad_norm: Optional[PositiveFloat] = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skips: PositiveInt = 10

    @field_validator("epochs")
    @classmethod
    def _one_of(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is not None and info.data.get("steps") is not None:
            raise ValueError("give train.steps or train.epochs, not both")
        return v


class CompareConfig(Strict):
    optimizers: Annotated[list[OptimizerSpec], Field(min_length=1)]

    @field_validator("optimizers", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [_name_only(item, "sgd") for item in v] if isinstance(v, list) else v


# ---- learning-rate schedules (stepped once per optimizer step)


class NoSchedule(Strict):
    name: Literal["none"]


class StepSchedule(Strict):
    name: Literal["step"]
    step_size: PositiveInt
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class CosineSchedule(Strict):
    name: Literal["cosine"]
    T_max: Optional[PositiveInt] = None  # default: the run's total steps
    eta_min: NonNegFloat = 0.0


class WarmupCosineSchedule(Strict):
    name: Literal["warmup_cosine"]
    warmup_steps: PositiveInt
    T_max: Optional[PositiveInt] = None  # cosine length after warm-up; default: the rest of the run
    eta_min: NonNegFloat = 0.0


SchedulerSpec = Annotated[
    Union[NoSchedule, StepSchedule, CosineSchedule, WarmupCosineSchedule], Field(discriminator="name")
]
SCHEDULERS = ("none", "step", "cosine", "warmup_cosine")


class DistributedConfig(Strict):
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on the CPU


DEFAULT_STEPS = 100
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


class Config(Strict):
    seed: NonNegInt = 0
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    model: ModelConfig
    loss: LossSpec = Field(default_factory=lambda: MSELoss(name="mse"))
    optimizer: OptimizerSpec = Field(default_factory=lambda: SGD(name="sgd"))
    data: DataSpec
    scheduler: SchedulerSpec = Field(default_factory=lambda: NoSchedule(name="none"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    compare: Optional[CompareConfig] = None

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="<config>")

    @field_validator("loss", "optimizer", "scheduler", mode="before")
    @classmethod
    def _bare_name(cls, v: Any, info: ValidationInfo) -> Any:
        return _name_only(v, {"loss": "mse", "optimizer": "sgd", "scheduler": "none"}[info.field_name])

    @model_validator(mode="after")
    def _loss_fits_targets(self) -> "Config":
        found = []
        data, loss = self.data, self.loss.name
        if isinstance(data, SyntheticData):
            if loss in CLASSIFICATION_LOSSES and data.targets != "classes":
                found.append((("data", "targets"), f"loss {loss} needs data.targets: classes", data.targets))
            if loss not in CLASSIFICATION_LOSSES and data.targets == "classes":
                found.append((("data", "targets"),
                              f"class targets need loss cross_entropy or bce_with_logits, not {loss}", data.targets))
        if loss == "cross_entropy" and self.model.output_size < 2:
            found.append((("model", "output_size"), "cross_entropy needs output_size >= 2 (one logit per class)",
                          self.model.output_size))
        if found:
            raise _LocatedError(found)
        return self

    # -- resolved values -------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the config are resolved against."""
        return self._base_dir

    @property
    def source(self) -> str:
        return self._source

    def data_path(self) -> Path:
        assert isinstance(self.data, CsvData)
        p = Path(self.data.path).expanduser()
        return p if p.is_absolute() else self._base_dir / p

    def plain(self) -> dict[str, Any]:
        """The resolved config as plain data (YAML/JSON/checkpoint friendly)."""
        return self.model_dump(mode="json")


class _LocatedError(ValueError):
    """Model-level problems, each belonging to a key path: ``[(loc, message, value), ...]``."""

    def __init__(self, found: list[tuple[tuple, str, Any]]):
        self.found = found
        super().__init__("; ".join(m for _, m, _ in found))


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats such as ``1e-3`` as numbers, not strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str, where: str) -> tuple[Any, dict[tuple, int], dict[tuple, str], list[str]]:
    """Parse one YAML document. Returns data, key path → line, key path → source text, problems."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {' '.join(str(e).split())}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, {}, []
        lines: dict[tuple, int] = {}
        raw: dict[tuple, str] = {}
        problems: list[str] = []
        _index(node, (), lines, raw, problems, where)
        return loader.construct_document(node), lines, raw, problems
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        msg = " ".join(str(x) for x in (e.context, e.problem) if x).replace("\t", "\\t")
        raise ConfigError(f"{where}{line}: YAML syntax error: {msg}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()


def _index(node, path, lines, raw, problems, where):
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    f"{where}:{line}: {_dotted(path + (key,))}: duplicate key (first given on line {seen[key]})"
                )
            seen.setdefault(key, line)
            lines[path + (key,)] = line
            _index(value_node, path + (key,), lines, raw, problems, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index(item, path + (i,), lines, raw, problems, where)
    elif isinstance(node, yaml.ScalarNode):
        raw[path] = f"'{node.value}'" if node.style in ("'", '"') else node.value


def parse_value(text: str, where: str = "--set") -> Any:
    """Parse an override value as YAML (``0.1`` → float, ``true`` → bool, ``[1, 2]`` → list)."""
    data, *_ = _parse_yaml(text, where)
    return data


def _split_top_level(text: str) -> list[str]:
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


# --------------------------------------------------------------------------- overrides


def apply_override(data: dict, spec: str) -> tuple[tuple, str]:
    """Apply one ``key.path=value`` override in place; returns the path and the value's text."""
    if "=" not in spec:
        raise ConfigError(f"--set {spec}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.1")
    key, _, text = spec.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {spec}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.1")
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    try:
        value = parse_value(text)
    except ConfigError as e:
        raise ConfigError(f"--set {key}: cannot parse value {text!r}: {e.problems[0].split(': ', 1)[-1]}") from None
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = node[part] if _has(node, part) else None
        if isinstance(nxt, str) and isinstance(path[i + 1], str):
            nxt = {"name": nxt}  # `loss: huber` + `--set loss.delta=2`
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, (dict, list)):
            raise ConfigError(f"--set {key}: {_dotted(path[: i + 1])} is not a mapping (got {nxt!r})")
        _put(node, part, nxt, key)
        node = nxt
    _put(node, path[-1], value, key)
    return path, text.strip()


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
        raise ConfigError(f"--set {key}: no list item {part!r} here (the list has {len(node)} items)")


# --------------------------------------------------------------------------- errors


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) if path else "(top level)"


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


_TAGS = frozenset(ACTIVATIONS + LOSSES + OPTIMIZERS + SCHEDULERS + ("synthetic", "csv"))


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


class _Where:
    """Maps a key path to `FILE:LINE` or `--set`."""

    def __init__(self, source: str, lines: dict, raw: dict, overridden: dict):
        self.source, self.lines, self.raw, self.overridden = source, lines, raw, overridden

    def location(self, path: tuple) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return "--set"
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

    def line(self, path: tuple, message: str, value: Any = None, has_value: bool = True) -> str:
        got = f" (got {self.got(path, value)})" if has_value else ""
        return f"{self.location(path)}: {_dotted(path)}: {message}{got}"


def _typo_pairs(errors: list[dict]) -> dict[tuple, str]:
    """Unknown keys that look like a missing required key next to them: loc → the key meant."""
    missing: dict[tuple, list[str]] = {}
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
    pairs = {}
    for e in errors:
        if e["type"] == "extra_forbidden":
            loc = tuple(e["loc"])
            close = difflib.get_close_matches(str(loc[-1]), missing.get(loc[:-1], []), n=1, cutoff=0.6)
            if close:
                pairs[loc] = close[0]
    return pairs


def _messages(err: ValidationError, data: Any, where: _Where) -> list[str]:
    out: list[str] = []
    errors = err.errors()
    typos = _typo_pairs(errors)
    explained = {loc[:-1] + (meant,) for loc, meant in typos.items()}
    for e in errors:
        if e["type"] == "missing" and tuple(e["loc"]) in explained:
            continue  # reported as the typo that caused it
        loc = tuple(e["loc"])
        kind = e["type"]
        value = e.get("input")
        ctx = e.get("ctx") or {}
        if kind == "value_error" and isinstance(ctx.get("error"), _LocatedError):
            for sub, message, val in ctx["error"].found:
                out.append(where.line(loc + sub, message, val))
            continue
        path = _clean_loc(loc, data)
        msg = e["msg"].replace("Input should be", "must be")
        has_value = True
        if kind == "extra_forbidden":
            allowed = _allowed_keys(_type_at(Config, loc[:-1]))
            guess = typos.get(loc) or next(iter(difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.75)), None)
            hint = f"did you mean {guess}? " if guess else ""
            msg = f"unknown key; {hint}allowed keys: {', '.join(allowed)}"
            has_value = False
        elif kind == "missing":
            msg, has_value = "required key is missing", False
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            field = ctx.get("discriminator", "'name'").strip("'")
            tags = [t for t in (_tag_of(m) for m in _union_members(_type_at(Config, loc))) if t]
            path = path + (field,)
            what = "data kind" if field == "kind" else str(path[-2]) if len(path) > 1 else field
            if kind == "union_tag_invalid":
                msg, value = f"unknown {what}; expected one of: {', '.join(tags)}", ctx.get("tag")
            else:
                msg, has_value = f"required key is missing; one of: {', '.join(tags)}", False
        elif kind == "model_attributes_type":
            msg = "expected a mapping"
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
        out.append(where.line(path, msg, value, has_value))
    return out


# --------------------------------------------------------------------------- loading


def _read(path: Path) -> str:
    where = str(path)
    if not path.exists():
        raise ConfigError(f"{where}: no such file")
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory, not a config file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: file is too large for a config ({size} bytes; limit {MAX_CONFIG_BYTES})")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from None


def validate(
    data: Any,
    *,
    source: str = "<config>",
    base_dir: Optional[Path] = None,
    overrides: Optional[list[str]] = None,
    lines: Optional[dict] = None,
    raw: Optional[dict] = None,
) -> Config:
    """Validate plain data (plus overrides) into a :class:`Config`, or raise one ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{source}:1: expected a mapping of config sections at the top level (got a {kind})")
    overridden: dict[tuple, str] = {}
    for spec in overrides or []:
        path, text = apply_override(data, spec)
        overridden[path] = text
    where = _Where(source, lines or {}, raw or {}, overridden)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_messages(e, data, where)) from None
    cfg._base_dir = base_dir or Path.cwd()
    cfg._source = source
    return cfg


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Read, parse and validate a config file; every problem is reported in one ConfigError."""
    path = Path(path)
    text = _read(path)
    data, lines, raw, duplicates = _parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected config sections such as model and data")
    try:
        cfg = validate(
            data, source=str(path), base_dir=path.resolve().parent, overrides=overrides, lines=lines, raw=raw
        )
    except ConfigError as e:
        raise ConfigError(duplicates + e.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return cfg


class _OptimizerOnly(Strict):
    optimizer: OptimizerSpec


def parse_optimizer(text: str) -> BaseModel:
    """``adam``, ``adam:lr=1e-3``, ``sgd:lr=0.1,momentum=0.9`` → a validated optimizer spec.

    Values are parsed as YAML; problems read like the config's (``optimizer.lr: must be ...``).
    """
    where = f"--optimizer {text}"
    name, _, rest = text.partition(":")
    data: dict[str, Any] = {"name": name.strip()}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"{where}: expected NAME or NAME:KEY=VALUE,KEY=VALUE (e.g. sgd:lr=0.1,momentum=0.9)")
        if key in data:
            raise ConfigError(f"{where}: optimizer.{key}: given twice")
        try:
            data[key] = parse_value(value, where)
        except ConfigError:
            raise ConfigError(f"{where}: optimizer.{key}: cannot parse {value.strip()!r} as a YAML value") from None
    try:
        return _OptimizerOnly.model_validate({"optimizer": data}).optimizer
    except ValidationError as e:
        raise ConfigError(_messages(e, {"optimizer": data}, _Where(where, {}, {}, {}))) from None


def optimizer_label(spec: BaseModel) -> str:
    """A short display name: the optimizer, its lr, and every hyperparameter that is not torch's default."""
    parts = [spec.name]
    for key, field in type(spec).model_fields.items():
        if key == "name":
            continue
        value = getattr(spec, key)
        if key == "lr" or value != field.default:
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = "[" + ",".join(f"{v:g}" for v in value) + "]"
            else:
                text = f"{value:g}"
            parts.append(f"{key}={text}")
    return " ".join(parts)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.plain(), sort_keys=False, default_flow_style=None)


def resolved_steps(cfg: Config, batches_per_epoch: int) -> int:
    if cfg.train.steps is not None:
        return cfg.train.steps
    if cfg.train.epochs is not None:
        return cfg.train.epochs * batches_per_epoch
    return DEFAULT_STEPS


def default_log_every(steps: int) -> int:
    """A round logging interval that prints about 20-50 rows."""
    for every in (1, 2, 5, 10, 20, 25, 50):
        if steps <= 50 * every:
            return every
    scale = 100
    while True:
        for m in (1, 2, 5):
            if steps <= 50 * m * scale:
                return m * scale
        scale *= 10

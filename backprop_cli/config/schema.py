"""The config schema: one pydantic model per section. No torch here.

Each component kind (activation, loss, optimizer, schedule) is a tagged union; the tuple of its names
(``ACTIVATION_NAMES``, ...) is derived from the union, so adding a component is one model here and one
entry in its table in ``backprop_cli/core/components.py``.

The building blocks are in config/base.py, the components' sections (activations, losses, optimizers,
schedules) in config/components.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

from backprop_cli.config.base import (
    NO_VALUE,
    LocatedError,
    NonNegFloat,
    PositiveFloat,
    Seed,
    Size,
    Strict,
    drop_unset,
    name_only,
    tags,
)
from backprop_cli.config.components import (
    SGD,
    ActivationSpec,
    LossSpec,
    MSELoss,
    NoSchedule,
    OptimizerSpec,
    Relu,
    SchedulerSpec,
    is_classification,
    task_of,
)
from backprop_cli.config.tune import TuneConfig



NORM_NAMES = ("none", "batch", "layer")  # model.norm: after each hidden linear layer, before the activation


DropoutP = Annotated[float, Field(ge=0, lt=1)]


def _missing_width(data: Any) -> InitErrorDetails:
    return InitErrorDetails(type="missing", loc=("hidden_size",), input=data)


def _with_missing(e: ValidationError, data: Any) -> ValidationError:
    details = [InitErrorDetails(type=x["type"], loc=x["loc"], input=x["input"], **({"ctx": x["ctx"]} if "ctx" in x else {}))
               for x in e.errors()]
    return ValidationError.from_exception_data(e.title, [*details, _missing_width(data)])


class ModelConfig(Strict):
    """``hidden_size: 20`` is one hidden layer; ``hidden_sizes: [64, 64, 64]`` any number of them."""

    # auto: derived from the data (CSV/Parquet: numbers, one-hot widths, indicators; see docs/tables.md)
    input_size: Optional[Size] = None  # written `auto` (None inside); resolved by data.load.read_table
    hidden_size: Optional[Size] = None
    hidden_sizes: Optional[Annotated[list[Size], Field(min_length=1, max_length=64)]] = None
    output_size: Size
    activation: ActivationSpec = Field(default_factory=lambda: Relu(name="relu"))
    bias: bool = True
    init: Literal["default", "xavier", "kaiming"] = "default"
    init_gain: Optional[PositiveFloat] = None  # default: torch.nn.init.calculate_gain of the activation
    # the cures (README, "Normalization, dropout and residual connections"): a hidden block is
    # linear → norm → activation → dropout, with a skip around it where its input and output widths match
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: Union[DropoutP, Annotated[list[DropoutP], Field(min_length=1, max_length=64)]] = 0.0
    residual: bool = False

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout_number(cls, v: Any) -> Any:
        """``dropout: 0`` is 0.0; one message for a value outside [0, 1) (not one per member of the union)."""
        def one(p: Any) -> Any:
            if isinstance(p, bool) or not isinstance(p, (int, float)):
                raise ValueError("expected a probability 0 <= P < 1 (e.g. 0.2), or a list of one per hidden layer")
            if not 0 <= p < 1:
                raise ValueError("dropout must be at least 0 and below 1 (the share of a layer's outputs zeroed "
                                 "in training)")
            return float(p)
        return [one(p) for p in v] if isinstance(v, list) else one(v)

    @field_validator("activation", mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return name_only(v, "relu")

    @field_validator("input_size", mode="before")
    @classmethod
    def _auto(cls, v: Any) -> Any:
        if v == "auto":
            return None
        if v is None:
            raise ValueError("expected a number of inputs, or auto (derived from the data)")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _width_key_given(cls, data: Any, handler):
        """``hidden_size`` (or ``hidden_sizes``) is required: reported beside every other problem."""
        missing = isinstance(data, dict) and "hidden_size" not in data and "hidden_sizes" not in data
        try:
            model = handler(data)
        except ValidationError as e:
            if not missing:
                raise
            raise _with_missing(e, data) from None
        if missing:
            raise ValidationError.from_exception_data(cls.__name__, [_missing_width(data)])
        return model

    @model_validator(mode="after")
    def _one_width_key(self) -> "ModelConfig":
        if self.hidden_size is not None and self.hidden_sizes is not None:
            raise LocatedError([(("hidden_sizes",), "give model.hidden_size or model.hidden_sizes, not both "
                                 "(both given in the same place; an override of one replaces the other)",
                                 self.hidden_sizes)])
        if self.init_gain is not None and self.init == "default":
            raise LocatedError([(("init_gain",), "init_gain needs model.init: xavier or kaiming", self.init_gain)])
        hidden = len(self.hidden_widths)
        if isinstance(self.dropout, list) and len(self.dropout) != hidden:
            shown = " → ".join(map(str, self.widths)) if self.input_size is not None else \
                "hidden " + " → ".join(map(str, self.hidden_widths))
            raise LocatedError([(("dropout",), f"a dropout list gives one value per hidden layer: {hidden} here "
                                 f"({shown})", self.dropout)])
        # with input_size: auto the first block's input width is known once the data is read (checked then)
        if self.residual and self.input_size is not None and not self.residual_layers:
            blocks = ", ".join(f"layer{k} {a}→{b}" for k, (a, b) in enumerate(zip(self.widths, self.widths[1:-1]), 1))
            raise LocatedError([(("residual",), "residual: true adds a skip around each hidden layer whose input and "
                                 f"output widths match, and none does here ({blocks}); give two equal widths in a row, "
                                 "e.g. model.input_size equal to the first hidden size, or hidden_sizes [32, 32]",
                                 self.residual)])
        return self

    @property
    def dropouts(self) -> list[float]:
        """The dropout probability after each hidden layer's activation."""
        hidden = len(self.hidden_widths)
        return list(self.dropout) if isinstance(self.dropout, list) else [self.dropout] * hidden

    @property
    def hidden_widths(self) -> list[int]:
        """The hidden layers' widths (known before the data is read, unlike the input's with ``auto``)."""
        return list(self.hidden_sizes) if self.hidden_sizes is not None else [self.hidden_size]

    @property
    def residual_layers(self) -> list[int]:
        """The hidden layers k (from 1) with a skip connection: h_k = h_{k-1} + block_k(h_{k-1}) where the
        layer's input and output widths match (only with ``residual: true``; others stay plain blocks)."""
        w = self.widths
        return [k for k in range(1, len(w) - 1) if w[k - 1] == w[k]]

    @property
    def widths(self) -> list[int]:
        """Every layer's width, input to output: ``[input, hidden..., output]``."""
        hidden = self.hidden_sizes if self.hidden_sizes is not None else [self.hidden_size]
        if self.input_size is None:
            raise ValueError("model.input_size is auto until the data is read (data.read_table resolves it)")
        return [self.input_size, *hidden, self.output_size]

    @model_serializer(mode="wrap")
    def _given_width_key_only(self, handler):
        out = handler(self)
        for key in ("hidden_size", "hidden_sizes", "init_gain"):
            if out.get(key) is None:
                out.pop(key, None)
        if out.get("input_size", 0) is None:
            out["input_size"] = "auto"
        # the cures appear only when used: a config without them reads (and checkpoints) as before
        for key, off in (("norm", "none"), ("dropout", 0.0), ("residual", False)):
            if key in out and out[key] == off:
                out.pop(key)
        return out


Fraction = Annotated[float, Field(gt=0, lt=1)]




COLUMN_TYPES = ("number", "category", "binary")


MAX_CATEGORIES = 1000  # distinct values a one-hot column may have (encoding: embedding has no bound)


class ColumnSpec(Strict):
    """``data.columns.NAME``: how one input column is read and encoded (docs/tables.md)."""

    type: Optional[Literal["number", "category", "binary"]] = None  # null: inferred from the values
    # auto: numbers median, categories a "missing" category of their own, binary most_frequent
    missing: Optional[Literal["auto", "error", "drop_rows", "mean", "median", "most_frequent", "constant"]] = None
    fill: Optional[Union[float, int, str]] = None  # the value of missing: constant
    indicator: bool = False  # add a NAME_missing 0/1 input
    encoding: Literal["onehot", "embedding"] = "onehot"  # categories
    embedding_size: Optional[Size] = None  # default min(600, round(1.6 * n ** 0.56)) (fastai's rule)
    on_unknown: Literal["zeros", "error"] = "zeros"  # a category not seen in training: all-zero / <unknown>

    @model_validator(mode="after")
    def _consistent(self) -> "ColumnSpec":
        found = []
        if self.missing == "constant" and self.fill is None:
            found.append((("fill",), "missing: constant needs fill: VALUE", NO_VALUE))
        if self.fill is not None and self.missing != "constant":
            found.append((("fill",), "fill needs missing: constant", self.fill))
        if self.type == "number" and self.fill is not None and not isinstance(self.fill, (int, float)):
            found.append((("fill",), "a number column's fill must be a number", self.fill))
        if self.type in ("category", "binary") and self.missing in ("mean", "median"):
            found.append((("missing",), f"{self.missing} needs a number column (type: {self.type})", self.missing))
        if self.type in ("number", "binary") and (self.encoding != "onehot" or self.embedding_size is not None):
            found.append((("encoding",), "encoding is for category columns", self.encoding))
        if self.embedding_size is not None and self.encoding != "embedding":
            found.append((("embedding_size",), "embedding_size needs encoding: embedding", self.embedding_size))
        if found:
            raise LocatedError(found)
        return self


def _fraction_or_path(v: Any, path_ok: bool) -> Any:
    if v is None or (path_ok and isinstance(v, str) and v):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1:
        return float(v)
    raise ValueError("expected a fraction between 0 and 1 (exclusive), e.g. 0.2"
                     + (", or the path of a CSV file" if path_ok else ""))


class _DataCommon(Strict):
    """Keys every kind of data takes: batching, held-out rows and scaling."""

    batch_size: Size = 32
    shuffle: bool = True
    drop_last: bool = False  # true: every batch has batch_size rows; the last partial batch of an epoch is unused
    standardize: bool = False  # z-score the features with the training rows' mean and std
    standardize_target: bool = False  # regression: z-score the targets too (metrics stay in the original units)
    # the seed of the validation split (and of synthetic data); default: the top-level seed. train --seeds
    # fixes it, so that the seeds move the initial weights and the batch order only
    split_seed: Optional[Seed] = None

    @model_serializer(mode="wrap")
    def _given_split_seed_only(self, handler):
        return drop_unset(handler(self), ("split_seed",))


class SyntheticData(_DataCommon):
    kind: Literal["synthetic"]
    samples: Size = 256
    targets: Literal["random", "teacher", "classes"] = "teacher"
    noise: NonNegFloat = 0.1
    validation: Optional[Fraction] = None  # a seeded share of the samples held out

    @field_validator("validation", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> Any:
        return _fraction_or_path(v, path_ok=False)

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticData":
        if self.batch_size > self.samples:
            raise LocatedError([(("batch_size",), f"batch_size is larger than data.samples ({self.samples})",
                                 self.batch_size)])
        return self


class CsvData(_DataCommon):
    kind: Literal["csv"]
    path: Annotated[str, Field(min_length=1)]
    target: Union[str, Annotated[list[str], Field(min_length=1)]]
    features: Optional[Annotated[list[str], Field(min_length=1)]] = None
    # a share of the rows (seeded; stratified by class for classification losses), or a second CSV with
    # the same columns (relative to the config file's folder)
    validation: Optional[Union[Fraction, Annotated[str, Field(min_length=1)]]] = None
    # every input column's default policy for an empty or NA cell (data.columns.NAME.missing overrides it)
    missing: Literal["auto", "error", "drop_rows", "mean", "median", "most_frequent", "constant"] = "auto"
    columns: Optional[dict[str, ColumnSpec]] = None  # types and policies by column name
    delimiter: Optional[Annotated[str, Field(min_length=1, max_length=1)]] = None  # default: , (tab for .tsv)
    decimal: Literal[".", ","] = "."  # the decimal mark of numbers in a text file

    @model_validator(mode="after")
    def _marks(self) -> "CsvData":
        found = []
        if self.decimal == "," and (self.delimiter or ",") == ",":
            found.append((("decimal",), "decimal: ',' needs another data.delimiter (e.g. ';')", self.decimal))
        for key, v in (("path", self.path), ("validation", self.validation)):
            if isinstance(v, str) and "\x00" in v:  # open() would raise ValueError: embedded null byte
                found.append(((key,), "a path cannot hold a NUL byte", v))
        if self.delimiter is not None and self.delimiter in "\"\r\n":
            found.append((("delimiter",), "a delimiter cannot be a quote or a line break", self.delimiter))
        if self.missing == "constant":
            found.append((("missing",), "constant needs a fill: set it per column (data.columns.NAME.fill)",
                          self.missing))
        for name in self.target_columns:
            if self.columns and name in self.columns:
                found.append((("columns", name), "the target is not an input column: its type comes from the "
                              "loss", NO_VALUE))
        if found:
            raise LocatedError(found)
        return self

    @field_validator("validation", mode="before")
    @classmethod
    def _fraction_or_path(cls, v: Any) -> Any:
        """One message for a bad value, not one per member of the union."""
        return _fraction_or_path(v, path_ok=True)

    @property
    def target_columns(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)


DataSpec = Annotated[Union[SyntheticData, CsvData], Field(discriminator="kind")]


DATA_KIND_NAMES = tags(DataSpec)


class EarlyStopping(Strict):
    """Stop when val_loss has not improved by more than ``min_delta`` for ``patience`` evaluations."""

    patience: Size
    min_delta: NonNegFloat = 0.0
    # true: the model at the end of the run (and --save, and the summary) are those of the best evaluation
    restore_best: bool = False


class TrainConfig(Strict):
    steps: Optional[Size] = None
    epochs: Optional[Size] = None
    log_every: Optional[Size] = None
    clip_grad_norm: Optional[PositiveFloat] = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skips: Size = 10
    zero_grad: bool = True  # false: skip optimizer.zero_grad(), gradients accumulate (teaching)
    eval_every: Optional[Size] = None  # evaluate every N steps (default: every epoch, with validation data)
    early_stopping: Optional[EarlyStopping] = None

    @field_validator("epochs")
    @classmethod
    def _one_of(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is not None and info.data.get("steps") is not None:
            raise ValueError("give train.steps or train.epochs, not both (both given in the same place; an "
                             "override of one replaces the other)")
        return v


class CompareConfig(Strict):
    optimizers: Annotated[list[OptimizerSpec], Field(min_length=1)]

    @field_validator("optimizers", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [name_only(item, "sgd") for item in v] if isinstance(v, list) else v


class DistributedConfig(Strict):
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on the CPU


DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]{1,4})?)$"


PRECISION_NAMES = ("fp32", "bf16", "fp16")


class Config(Strict):
    seed: Seed = 0
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
    tune: Optional[TuneConfig] = None  # backprop tune's search (backprop_cli/config/tune.py)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="<config>")

    @field_validator("loss", "optimizer", "scheduler", mode="before")
    @classmethod
    def _bare_name(cls, v: Any, info: ValidationInfo) -> Any:
        return name_only(v, {"loss": "mse", "optimizer": "sgd", "scheduler": "none"}[info.field_name])

    @model_validator(mode="after")
    def _loss_fits_targets(self) -> "Config":
        found = []
        data, loss = self.data, self.loss.name
        if isinstance(data, SyntheticData):
            if is_classification(loss) and data.targets != "classes":
                found.append((("data", "targets"), f"loss {loss} needs data.targets: classes", data.targets))
            if not is_classification(loss) and data.targets == "classes":
                found.append((("data", "targets"),
                              f"class targets need loss cross_entropy or bce_with_logits, not {loss}", data.targets))
        if self.train.eval_every is not None and data.validation is None:
            found.append((("train", "eval_every"), "evaluation needs validation data: set data.validation to a "
                          "fraction (e.g. 0.2) or a CSV file", self.train.eval_every))
        if self.train.early_stopping is not None and data.validation is None:
            found.append((("train", "early_stopping"), "early stopping needs validation data: set data.validation "
                          "to a fraction (e.g. 0.2) or a CSV file", NO_VALUE))
        if self.scheduler.name == "reduce_on_plateau" and data.validation is None:
            found.append((("scheduler",), "reduce_on_plateau lowers the lr when val_loss stops improving and needs "
                          "validation data: set data.validation to a fraction (e.g. 0.2) or a CSV file",
                          "reduce_on_plateau"))
        if data.standardize_target and is_classification(loss):
            found.append((("data", "standardize_target"), f"standardize_target is for regression, not {loss}",
                          data.standardize_target))
        if self.model.input_size is None and isinstance(data, SyntheticData):
            found.append((("model", "input_size"), "synthetic data needs a number of inputs", "auto"))
        if self.model.norm == "batch" and data.batch_size < 2:
            found.append((("data", "batch_size"), "model.norm: batch normalizes each unit over the rows of a batch "
                          "and needs at least 2 of them; raise data.batch_size or use model.norm: layer",
                          data.batch_size))
        if task_of(loss) == "classes" and self.model.output_size < 2:
            found.append((("model", "output_size"), "cross_entropy needs output_size >= 2 (one logit per class)",
                          self.model.output_size))
        if self.tune is not None:
            from backprop_cli.config.tune import space_problems

            found += space_problems(self)
        weights = getattr(self.loss, "class_weights", None)
        if isinstance(weights, list) and len(weights) != self.model.output_size:
            found.append((("loss", "class_weights"), f"give one weight per class (model.output_size is "
                          f"{self.model.output_size}), or auto", weights))
        pos = getattr(self.loss, "pos_weight", None)
        if isinstance(pos, list) and len(pos) != self.model.output_size:
            found.append((("loss", "pos_weight"), f"give one number, one per target column (model.output_size is "
                          f"{self.model.output_size}), or auto", pos))
        if found:
            raise LocatedError(found)
        return self

    @property
    def split_seed(self) -> int:
        """The seed of the validation split and of synthetic data: ``data.split_seed``, else ``seed``."""
        return self.data.split_seed if self.data.split_seed is not None else self.seed

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

    def validation_path(self) -> Optional[Path]:
        """``data.validation`` when it names a CSV file, resolved like ``data.path``."""
        v = getattr(self.data, "validation", None)
        if not isinstance(v, str):
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else self._base_dir / p

    def plain(self) -> dict[str, Any]:
        """The resolved config as plain data (YAML/JSON/checkpoint friendly)."""
        return self.model_dump(mode="json")


class OptimizerOnly(Strict):
    """``--optimizer`` on the command line is validated as this one-key document."""

    optimizer: OptimizerSpec

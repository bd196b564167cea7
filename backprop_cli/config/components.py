"""The components a config names: activations, losses (and the task each defines: task_of), optimizers,
learning-rate schedules. Each is one pydantic model in its union; core/components.py has the torch side.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from backprop_cli.config.base import Betas, NonNegFloat, PositiveFloat, Size, Strict, drop_unset, tags
from backprop_cli.limits import MAX_COUNT


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


ActivationSpec = Annotated[Union[Relu, Tanh, Sigmoid, Gelu, LeakyRelu, Identity], Field(discriminator="name")]


ACTIVATION_NAMES = tags(ActivationSpec)


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
    # a weight per class (torch's CrossEntropyLoss weight), or auto: n / (k · count_c) over the training rows
    class_weights: Optional[Union[Literal["auto"], Annotated[list[PositiveFloat], Field(min_length=2)]]] = None

    @model_serializer(mode="wrap")
    def _given_weights_only(self, handler):
        return drop_unset(handler(self), ("class_weights",))


class BCEWithLogitsLoss(Strict):
    name: Literal["bce_with_logits"]
    reduction: Reduction = "mean"
    # the weight of the positive rows (torch's pos_weight), one number or one per target column, or auto:
    # count_negative / count_positive of each column over the training rows
    pos_weight: Optional[Union[Literal["auto"], PositiveFloat, Annotated[list[PositiveFloat], Field(min_length=1)]]] = None

    @model_serializer(mode="wrap")
    def _given_weights_only(self, handler):
        return drop_unset(handler(self), ("pos_weight",))


LossSpec = Annotated[Union[MSELoss, L1Loss, HuberLoss, SmoothL1Loss, CrossEntropyLoss, BCEWithLogitsLoss],
                     Field(discriminator="name")]


LOSS_NAMES = tags(LossSpec)


# The task a loss defines, the one answer to "is this classification?" (read it through task_of):
# "classes": one integer class label per row, the model gives one logit per class (cross_entropy);
# "binary": 0/1 targets, one logit per target column (bce_with_logits);
# "regression": real-valued targets, one output per target column (every other loss).
Task = Literal["classes", "binary", "regression"]


TASKS: dict[str, Task] = {"mse": "regression", "l1": "regression", "huber": "regression",
                          "smooth_l1": "regression", "cross_entropy": "classes", "bce_with_logits": "binary"}


def task_of(loss: Any) -> Task:
    """The task of a loss given by name or as its config section."""
    return TASKS[loss if isinstance(loss, str) else loss.name]


def is_classification(loss: Any) -> bool:
    """Class labels or 0/1 targets (accuracy is its metric), not real values."""
    return task_of(loss) != "regression"


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


class _AdamFamily(Strict):
    name: str
    lr: PositiveFloat = 1e-3
    betas: Betas = [0.9, 0.999]
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegFloat = 0.0
    amsgrad: bool = False
    maximize: bool = False


class Adam(_AdamFamily):
    name: Literal["adam"]


class AdamW(_AdamFamily):
    """Adam with decoupled weight decay (torch's default 1e-2)."""

    name: Literal["adamw"]
    weight_decay: NonNegFloat = 1e-2


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


OptimizerSpec = Annotated[Union[SGD, Adam, AdamW, RMSprop, Adagrad], Field(discriminator="name")]


OPTIMIZER_NAMES = tags(OptimizerSpec)


class NoSchedule(Strict):
    name: Literal["none"]


class StepSchedule(Strict):
    name: Literal["step"]
    step_size: Size
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class CosineSchedule(Strict):
    name: Literal["cosine"]
    T_max: Optional[Size] = None  # default: the run's total steps
    eta_min: NonNegFloat = 0.0


class WarmupCosineSchedule(Strict):
    name: Literal["warmup_cosine"]
    warmup_steps: Size
    T_max: Optional[Size] = None  # cosine length after warm-up; default: the rest of the run
    eta_min: NonNegFloat = 0.0


class PlateauSchedule(Strict):
    """torch's ReduceLROnPlateau on val_loss (mode min): stepped once per evaluation, not per step."""

    name: Literal["reduce_on_plateau"]
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 10  # evaluations without improvement
    min_lr: NonNegFloat = 0.0
    threshold: NonNegFloat = 1e-4  # relative: an improvement is val_loss < best · (1 − threshold)
    cooldown: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0  # evaluations after a reduction that are not counted


class OneCycleSchedule(Strict):
    """torch's OneCycleLR over the run's total steps (cycle_momentum off: the momentum stays the optimizer's)."""

    name: Literal["one_cycle"]
    max_lr: Optional[PositiveFloat] = None  # default: the optimizer's lr
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: PositiveFloat = 25.0  # the first lr is max_lr / div_factor
    final_div_factor: PositiveFloat = 1e4  # the last lr is the first / final_div_factor


SchedulerSpec = Annotated[Union[NoSchedule, StepSchedule, CosineSchedule, WarmupCosineSchedule, PlateauSchedule,
                                OneCycleSchedule],
                          Field(discriminator="name")]


SCHEDULER_NAMES = tags(SchedulerSpec)

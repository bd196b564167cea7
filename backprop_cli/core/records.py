"""What a run produces, as plain data: one :class:`StepRecord` per step and a :class:`Summary`.

No torch here: the report, the metrics writer and the JSON documents read these without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

# The metrics an evaluation reports besides the loss, by task (backprop_cli.config.task_of): the one list
# that train's records, its summary, the metrics file, TensorBoard and evaluate read.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classes": ("accuracy", "f1_macro", "roc_auc", "log_loss"),
    "binary": ("accuracy", "f1_macro", "roc_auc", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}
ALL_METRICS: tuple[str, ...] = ("accuracy", "f1_macro", "roc_auc", "log_loss", "mae", "rmse", "r2")


@dataclass(slots=True)
class StepRecord:
    """One optimizer step. ``grad_norm`` and ``grad_norms`` are measured before clipping and ``step()``."""

    step: int  # from 1
    loss: float  # loss of this step's batch, before the update
    grad_norm: float  # total L2 norm over all parameters
    grad_norms: dict[str, float]  # parameter name → L2 norm of its .grad
    lr: float  # the learning rate this step used
    time: float  # seconds since training started
    update_ratio: Optional[float] = None  # ‖Δw‖/‖w‖ of this step's update (when measured)
    clipped: Optional[bool] = None  # whether clip_grad_norm scaled the gradients (when clipping)
    skipped: bool = False  # the optimizer step was skipped (on_nonfinite: skip, or an fp16 overflow)
    loss_scale: Optional[float] = None  # the GradScaler's scale (precision: fp16)
    # train's diagnostics, on logging steps only (backprop_cli.core.diagnostics):
    activations: Optional[dict[str, dict[str, float]]] = None  # hidden layer → mean, std, dead/saturated_fraction
    grad_to_weight: Optional[dict[str, float]] = None  # parameter → ‖grad‖/‖w‖
    update_ratios: Optional[dict[str, float]] = None  # parameter → ‖Δw‖/‖w‖ of this step's update
    epoch: Optional[int] = None  # the epoch this step belongs to (from 1)
    epoch_loss: Optional[float] = None  # at the last step of a complete epoch: the mean loss over its rows
    evaluation: Optional[dict] = None  # at evaluation steps: val_loss, val_accuracy | val_mae, val_r2, train_...

    def as_dict(self) -> dict:
        out = {"step": self.step, "loss": self.loss, "grad_norm": self.grad_norm,
               "grad_norms": dict(self.grad_norms), "lr": self.lr, "time": self.time}
        if self.update_ratio is not None:
            out["update_ratio"] = self.update_ratio
        if self.clipped is not None:
            out["clipped"] = self.clipped
        if self.skipped:
            out["skipped"] = True
        if self.loss_scale is not None:
            out["loss_scale"] = self.loss_scale
        if self.activations is not None:
            out["activations"] = {layer: dict(stats) for layer, stats in self.activations.items()}
        if self.grad_to_weight is not None:
            out["grad_to_weight"] = dict(self.grad_to_weight)
        if self.update_ratios is not None:
            out["update_ratios"] = dict(self.update_ratios)
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.epoch_loss is not None:
            out["epoch_loss"] = self.epoch_loss
        if self.evaluation:
            out.update(self.evaluation)
        return out


def is_logging_step(step: int, first: int, every: int, last: int) -> bool:
    """The steps train prints a row for and measures its diagnostics at: the run's first step, every
    ``every``-th step and the last."""
    return step == first or step % every == 0 or step == last


@dataclass
class Summary:
    steps: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan
    best_loss: float = math.inf
    best_step: int = 0
    wall_time: float = 0.0
    skipped: int = 0
    clipped: int = 0
    warnings: list[str] = field(default_factory=list)  # train's diagnostics warnings (backprop_cli.core.health)
    epochs: int = 0  # the epoch of the last step
    epoch_loss: float = math.nan  # the mean loss over the rows of the last complete epoch
    validation: Optional[dict] = None  # the last evaluation: loss, accuracy | r2 and mae, best_step, best_loss
    evaluation: Optional[dict] = None  # its detail: classes, confusion matrix, per-class precision/recall/F1

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else math.nan

    def as_dict(self) -> dict:
        out = {"steps": self.steps, "epochs": self.epochs, "first_loss": self.first_loss,
               "last_loss": self.last_loss, "best_loss": self.best_loss, "best_step": self.best_step,
               "epoch_loss": self.epoch_loss, "wall_time": self.wall_time, "steps_per_s": self.steps_per_s,
               "skipped": self.skipped, "clipped": self.clipped, "warnings": list(self.warnings)}
        if self.validation is not None:
            out["validation"] = {**self.validation, **(self.evaluation or {})}
        return out


@dataclass
class Tracker:
    """Folds step records into a :class:`Summary`."""

    summary: Summary = field(default_factory=Summary)
    _t0: float = field(default_factory=time.perf_counter)

    def record(self, rec: StepRecord) -> None:
        s = self.summary
        if s.steps == 0:
            s.first_loss = rec.loss
        s.steps += 1
        if rec.epoch is not None:
            s.epochs = rec.epoch
        if rec.epoch_loss is not None:
            s.epoch_loss = rec.epoch_loss
        s.skipped += rec.skipped
        s.clipped += bool(rec.clipped)
        if rec.skipped:
            return
        s.last_loss = rec.loss
        if rec.loss < s.best_loss:
            s.best_loss, s.best_step = rec.loss, rec.step


    def finish(self) -> Summary:
        self.summary.wall_time = time.perf_counter() - self._t0
        return self.summary

"""What a run produces, as plain data: one :class:`StepRecord` per step and a :class:`Summary`.

No torch here: the report, the metrics writer and the JSON documents read these without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional


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
    # train's diagnostics, on logging steps only (backprop_cli.diagnostics):
    activations: Optional[dict[str, dict[str, float]]] = None  # hidden layer → mean, std, dead/saturated_fraction
    grad_to_weight: Optional[dict[str, float]] = None  # parameter → ‖grad‖/‖w‖
    update_ratios: Optional[dict[str, float]] = None  # parameter → ‖Δw‖/‖w‖ of this step's update

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
    warnings: list[str] = field(default_factory=list)  # train's diagnostics warnings (backprop_cli.health)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else math.nan

    def as_dict(self) -> dict:
        return {"steps": self.steps, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "best_loss": self.best_loss, "best_step": self.best_step, "wall_time": self.wall_time,
                "steps_per_s": self.steps_per_s, "skipped": self.skipped, "clipped": self.clipped,
                "warnings": list(self.warnings)}


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

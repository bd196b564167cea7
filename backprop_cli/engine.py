"""The training loop. It yields one record per step and never prints.

Read it top to bottom: batch → forward → loss → zero_grad → backward → measure → step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from backprop_cli.grads import grads_of, step_stats, update_ratio

BatchFn = Callable[[int], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass(slots=True)
class StepRecord:
    """One optimizer step. ``grad_norm`` and ``grad_norms`` are measured before ``optimizer.step()``."""

    step: int  # from 1
    loss: float  # loss of this step's batch, before the update
    grad_norm: float  # total L2 norm over all parameters
    grad_norms: dict[str, float]  # parameter name → L2 norm of its .grad
    lr: float
    time: float  # seconds since training started
    update_ratio: Optional[float] = None  # ‖Δw‖/‖w‖ of this step's update (when measured)

    def as_dict(self) -> dict:
        out = {"step": self.step, "loss": self.loss, "grad_norm": self.grad_norm,
               "grad_norms": dict(self.grad_norms), "lr": self.lr, "time": self.time}
        if self.update_ratio is not None:
            out["update_ratio"] = self.update_ratio
        return out


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchFn,
    steps: int,
    *,
    start_step: int = 0,
    zero_grad: bool = True,
    sync_every: int = 1,
    measure_updates: bool = False,
) -> Iterator[StepRecord]:
    """Run steps ``start_step+1 … steps`` and yield a record for each, in order.

    Scalars stay on the device and are read back together every ``sync_every`` steps (and at the
    last step) with one ``.tolist()``: 1 on the CPU, the logging interval on an accelerator.
    ``measure_updates`` also records ‖Δw‖/‖w‖, the size of each update relative to the weights.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    model.train()
    pending: list[tuple[int, torch.Tensor, float, float]] = []
    t0 = time.perf_counter()
    for i in range(start_step, steps):
        x, y = batches(i)
        output = model(x)
        loss = loss_fn(output, y)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats = step_stats(loss, grads_of(params))
        if measure_updates:
            before = [p.detach().clone() for p in params]
            optimizer.step()
            stats = torch.cat([stats, update_ratio(before, params).reshape(1)])
        else:
            optimizer.step()
        pending.append((i + 1, stats, optimizer.param_groups[0]["lr"], time.perf_counter() - t0))
        if len(pending) >= sync_every or i + 1 == steps:
            if len(pending) == 1:
                rows = [stats.tolist()]
            else:
                rows = torch.stack([s for _, s, _, _ in pending]).tolist()
            n = len(names)
            for (step, _, lr, t), v in zip(pending, rows):
                yield StepRecord(step, v[0], v[1], dict(zip(names, v[2:2 + n])), float(lr), t,
                                 v[2 + n] if measure_updates else None)
            pending.clear()


@dataclass
class Summary:
    steps: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan
    best_loss: float = math.inf
    best_step: int = 0
    wall_time: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else math.nan

    def as_dict(self) -> dict:
        return {"steps": self.steps, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "best_loss": self.best_loss, "best_step": self.best_step,
                "wall_time": self.wall_time, "steps_per_s": self.steps_per_s}


@dataclass
class Tracker:
    """Folds step records into a :class:`Summary`."""

    summary: Summary = field(default_factory=Summary)
    _t0: Optional[float] = None

    def __post_init__(self):
        self._t0 = time.perf_counter()

    def update(self, rec: StepRecord) -> None:
        s = self.summary
        if s.steps == 0:
            s.first_loss = rec.loss
        s.steps += 1
        s.last_loss = rec.loss
        if rec.loss < s.best_loss:
            s.best_loss, s.best_step = rec.loss, rec.step

    def finish(self) -> Summary:
        self.summary.wall_time = time.perf_counter() - self._t0
        return self.summary

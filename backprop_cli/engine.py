"""The training loop. It yields one record per step and never prints.

Read it top to bottom: batch → forward → loss → zero_grad → backward → measure → (check, clip) → step.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from backprop_cli.errors import BackpropError, EXIT_NONFINITE
from backprop_cli.grads import clip_grads_, grads_of, step_stats, update_ratio

BatchFn = Callable[[int], "tuple[torch.Tensor, torch.Tensor]"]


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
        return out


class NonFiniteError(BackpropError):
    """A non-finite loss or gradient stopped training."""

    exit_code = EXIT_NONFINITE

    def __init__(self, message: str, step: int, last_good_step: int, model_step: Optional[int] = None):
        super().__init__(message)
        self.step, self.last_good_step = step, last_good_step
        # the step the model's weights are at (> last_good_step when detection was deferred)
        self.model_step = last_good_step if model_step is None else model_step


def _nonfinite_message(step: int, values: list[float], names: list[str], skipped: int = 0) -> str:
    loss = values[0]
    first = next((n for n, v in zip(names, values[2:]) if not math.isfinite(v)), None)
    grads = f"first non-finite gradient: {first}" if first else "all gradients finite"
    extra = f" after skipping {skipped} step(s)" if skipped else ""
    return (f"non-finite value at step {step}{extra}: loss {loss:.4g}, {grads}; "
            "lower optimizer.lr, set train.clip_grad_norm, or run with --detect-anomaly to find the operation")


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
    clip_grad_norm: Optional[float] = None,
    scheduler=None,
    on_nonfinite: str = "stop",
    max_skips: int = 10,
    should_stop: Optional[Callable[[], bool]] = None,
    flush_every: Optional[int] = None,
    precision: str = "fp32",
    reduce_stats: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Iterator[StepRecord]:
    """Run steps ``start_step+1 … steps`` and yield a record for each, in order.

    Scalars stay on the device and are read back together every ``sync_every`` steps (and at the last
    step) with one ``.tolist()``: 1 on the CPU, the logging interval on an accelerator. With one read
    per step, a non-finite loss or gradient is caught before ``optimizer.step()``: ``stop`` raises
    :class:`NonFiniteError` with the model still at the last good step, ``skip`` skips the update (up
    to ``max_skips`` times). With deferred reads, ``stop`` is detected at the next read-back (the
    record stream still ends at the last good step); ``skip`` always reads every step.
    ``should_stop()`` is asked after every step: True ends the run cleanly after that step.
    ``flush_every`` forces a read-back at those steps, so that while their record is being handled the
    model is exactly at that step (for checkpoints).
    ``precision``: ``bf16``/``fp16`` run forward and loss under autocast; ``fp16`` scales the loss with
    a GradScaler, unscales the gradients before they are measured or clipped, and lets the scaler skip
    steps whose scaled gradients overflowed (recorded as skipped, with the scale in ``loss_scale``).
    ``reduce_stats`` combines the stats of several processes (DDP: the mean loss over ranks) just
    before they are read back.
    """
    base = getattr(model, "module", model)  # DistributedDataParallel wraps the model as .module
    base = getattr(base, "_orig_mod", base)  # torch.compile keeps it as ._orig_mod
    named = [(n, p) for n, p in base.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    n = len(names)
    exact = sync_every <= 1 or on_nonfinite == "skip"
    device_type = params[0].device.type if params else "cpu"
    autocast = _autocast(device_type, precision)
    scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
    reduce = reduce_stats or (lambda t: t)
    model.train()
    pending: list[tuple[int, torch.Tensor, float, float]] = []
    skips = 0
    last_good = start_step
    t0 = time.perf_counter()
    for i in range(start_step, steps):
        x, y = batches(i)
        with autocast:
            output = model(x)
            loss = loss_fn(output, y)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        grads = grads_of(params)
        stats = step_stats(loss.float(), grads)
        if scaler is not None:
            stats = torch.cat([stats, _scale_of(scaler, stats.device)])
        lr = optimizer.param_groups[0]["lr"]

        if exact:  # one read per step: check before the update
            values = read_back(reduce(stats))
            scale = values.pop() if scaler is not None else None
            if not all(map(math.isfinite, values)):
                overflow = scaler is not None and math.isfinite(values[0])
                if not overflow and (on_nonfinite == "stop" or skips >= max_skips):
                    raise NonFiniteError(_nonfinite_message(i + 1, values, names, skips), i + 1, last_good)
                if overflow:  # the scaler skips this update and lowers its scale
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    skips += 1
                yield StepRecord(i + 1, values[0], values[1], dict(zip(names, values[2:])), float(lr),
                                 time.perf_counter() - t0, None, None if clip_grad_norm is None else False, True,
                                 scale)
                last_good = i + 1  # the weights were left as they were: still good
                if scheduler is not None:
                    scheduler.step()
                if should_stop is not None and should_stop():
                    return
                continue
        if clip_grad_norm is not None:
            clip_grads_(grads, clip_grad_norm, stats[1])
        before = [p.detach().clone() for p in params] if measure_updates else None
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        ratio = update_ratio(before, params) if before is not None else None
        if scheduler is not None:
            scheduler.step()
        elapsed = time.perf_counter() - t0

        if exact:
            yield StepRecord(i + 1, values[0], values[1], dict(zip(names, values[2:])), float(lr), elapsed,
                             None if ratio is None else ratio.item(),
                             None if clip_grad_norm is None else values[1] > clip_grad_norm, False, scale)
            last_good = i + 1
        else:
            if ratio is not None:
                stats = torch.cat([stats, ratio.reshape(1)])
            pending.append((i + 1, stats, float(lr), elapsed))
            stop_now = should_stop is not None and should_stop()
            forced = flush_every is not None and (i + 1) % flush_every == 0
            if len(pending) >= sync_every or i + 1 == steps or stop_now or forced:
                rows = read_back(reduce(torch.stack([s for _, s, _, _ in pending])))
                for (step, _, lr_used, t), v in zip(pending, rows):
                    scale = v[2 + n] if scaler is not None else None
                    core = v[:2 + n]
                    overflow = scaler is not None and math.isfinite(core[0]) and not all(map(math.isfinite, core))
                    if not overflow and not all(map(math.isfinite, core)):
                        raise NonFiniteError(_nonfinite_message(step, core, names), step, last_good, i + 1)
                    yield StepRecord(step, core[0], core[1], dict(zip(names, core[2:])), lr_used, t,
                                     v[-1] if measure_updates else None,
                                     None if clip_grad_norm is None else core[1] > clip_grad_norm, overflow, scale)
                    last_good = step
                pending.clear()
            if stop_now:
                return
            continue
        if should_stop is not None and should_stop():
            return


def read_back(t: torch.Tensor) -> list:
    """The engine's only device→host read of its numbers (one per step on the CPU, one per logging
    step on an accelerator). benchmarks/cuda_check.py wraps it to allow exactly these syncs."""
    return t.tolist()


def _autocast(device_type: str, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device_type, dtype=dtype)


def _scale_of(scaler, device) -> torch.Tensor:
    scale = getattr(scaler, "_scale", None)  # a device tensor once the scaler is in use: no sync
    if scale is None:
        scale = torch.tensor(scaler.get_scale(), device=device)
    return scale.to(device=device, dtype=torch.float32).reshape(1)


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

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else math.nan

    def as_dict(self) -> dict:
        return {"steps": self.steps, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "best_loss": self.best_loss, "best_step": self.best_step, "wall_time": self.wall_time,
                "steps_per_s": self.steps_per_s, "skipped": self.skipped, "clipped": self.clipped}


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

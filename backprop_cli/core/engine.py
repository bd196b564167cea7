"""The training loop. One path, read top to bottom; it yields one record per step and never prints.

    batch → forward → loss → zero_grad → backward → measure → guard → step → record

On logging steps a :class:`Probe` (core.diagnostics.Diagnostics) (``probe=``) also measures each
hidden layer's activations and each parameter's ‖grad‖/‖w‖ and ‖Δw‖/‖w‖; its numbers ride on the same
read-back. Other steps pay nothing for it.

Mixed precision goes through one ``GradScaler(enabled=…)`` (a no-op unless ``precision: fp16``), as in
nanoGPT. The step's scalars (loss, gradient norms) stay on the device until :class:`ReadBack` reads
them: every step on the CPU (so a non-finite value is caught before the update), every logging step
on an accelerator (one sync per read-back, not per step).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Protocol

import torch
from torch import nn

from backprop_cli.errors import EXIT_NONFINITE, BackpropError
from backprop_cli.core.grads import clip_grads_, grads_of, step_stats, update_ratio, zero_grads
from backprop_cli.core.records import StepRecord


class Probe(Protocol):
    """What the loop asks of a per-layer probe on its logging steps (core.diagnostics.Diagnostics is one):
    whether a step is due, how many numbers it measures, the measuring (device tensors, no sync) and
    their unpacking into the record once read back."""

    width: int

    def measures_at(self, step: int) -> bool: ...
    def measure(self, hidden: list, grad_norms: torch.Tensor, params: list, before: list) -> torch.Tensor: ...
    def unpack(self, values: list[float]) -> dict: ...

BatchFn = Callable[[int], "tuple[torch.Tensor, torch.Tensor]"]
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Loop:
    """What one training loop turns: the model, its loss, its optimizer, the batches, the schedule."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    batches: BatchFn
    scheduler: object = None


@dataclass(frozen=True)
class Guard:
    """How the loop protects the weights: the same settings in every command that trains."""

    clip_grad_norm: Optional[float] = None  # clip the total gradient norm to this
    on_nonfinite: str = "stop"  # stop: raise NonFiniteError before the update; skip: skip the update
    max_skips: int = 10  # skip mode: at most this many skipped steps, then stop
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds loss scaling)
    zero_grad: bool = True  # False: gradients accumulate across steps (a teaching switch)


class NonFiniteError(BackpropError):
    """A non-finite loss or gradient stopped training."""

    exit_code = EXIT_NONFINITE

    def __init__(self, message: str, step: int, last_good_step: int, model_step: Optional[int] = None,
                 cause: str = ""):
        super().__init__(message)
        self.step, self.last_good_step = step, last_good_step
        # the step the model's weights are at (> last_good_step when detection was deferred)
        self.model_step = last_good_step if model_step is None else model_step
        self.cause = cause  # what went non-finite: "loss inf, first non-finite gradient: layer1.weight"
        self.record: Optional[StepRecord] = None  # the step's numbers as measured (set by run_steps)


def run_steps(loop: Loop, steps: int, *, start_step: int = 0, guard: Guard = Guard(), read_every: int = 1,
              flush_every: tuple[int, ...] = (), measure_updates: bool = False,
              should_stop: Optional[Callable[[], bool]] = None,
              reduce_stats: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
              probe: Optional[Probe] = None,
              stop_after_records: Optional[Callable[[], bool]] = None) -> Iterator[StepRecord]:
    """Run steps ``start_step+1 … steps`` and yield a record for each, in order.

    ``read_every``: read the scalars back every N steps (1 on the CPU); ``flush_every``: also at every
    multiple of these, so that while such a step's record is handled the model is exactly at that step
    (checkpoints, evaluation). ``measure_updates``: also measure ‖Δw‖/‖w‖ of every update.
    ``should_stop()`` is asked after every step: True ends the run cleanly after it.
    ``stop_after_records()`` is asked once the records read back have been handled (the consumer's own
    decision, e.g. early stopping on an evaluation at that step): True ends the run there.
    ``reduce_stats`` combines the scalars of several processes (DDP: the mean loss) before a read.
    ``probe``: per-layer diagnostics on the steps it says are due (:mod:`backprop_cli.core.diagnostics`).
    A non-finite loss or gradient: ``guard.on_nonfinite`` decides (see :class:`NonFiniteCheck`).
    """
    model, optimizer = loop.model, loop.optimizer
    names, params = trainable(model)
    device_type = params[0].device.type if params else "cpu"
    autocast = (torch.autocast(device_type, dtype=AUTOCAST_DTYPES[guard.precision])
                if guard.precision in AUTOCAST_DTYPES else nullcontext())
    scaler = torch.amp.GradScaler(device_type, enabled=guard.precision == "fp16")
    check = NonFiniteCheck(guard, names, scaled=scaler.is_enabled(), last_good=start_step)
    reads = ReadBack(names, check, every=read_every, flush_every=flush_every, reduce=reduce_stats,
                     clip=guard.clip_grad_norm, scaled=scaler.is_enabled(), probe=probe)
    model.train()
    t0 = time.perf_counter()
    for i in range(start_step, steps):
        x, y = loop.batches(i)
        probing = probe is not None and probe.measures_at(i + 1)
        with autocast:
            out, hidden = model(x, keep_hidden=True) if probing else (model(x), None)
            loss = loop.loss_fn(out, y)
        if guard.zero_grad:
            zero_grads(params)  # what optimizer.zero_grad(set_to_none=True) does, without its overhead
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # fp16: the gradients are measured and clipped unscaled
        grads = grads_of(params)
        stats = step_stats(loss, grads, loss_scale(scaler))
        lr = optimizer.param_groups[0]["lr"]
        values = reads.now(stats) if reads.exact else None  # the CPU: judged before the update
        try:
            update = values is None or check.allows_update(i + 1, values)
        except NonFiniteError as e:
            e.record = reads.record(_Pending(i + 1, stats, values, None, float(lr), time.perf_counter() - t0, True),
                                    values, None)
            raise
        before = None
        if update:
            if guard.clip_grad_norm is not None:
                clip_grads_(grads, guard.clip_grad_norm, stats[1])
            before = [p.detach().clone() for p in params] if measure_updates or probing else None
            scaler.step(optimizer)  # fp16: skipped by the scaler when the gradients overflowed
        scaler.update()
        ratio = update_ratio(before, params) if measure_updates and before is not None else None
        diag = probe.measure(hidden, stats[2:2 + len(params)], params, before) if probing else None
        if loop.scheduler is not None:
            loop.scheduler.step()
        reads.add(i + 1, stats, values, ratio, float(lr), time.perf_counter() - t0, update, diag)
        stopping = should_stop is not None and should_stop()
        if reads.reads_at(i + 1, steps, stopping):
            yield from reads.flush()
            if stop_after_records is not None and stop_after_records():
                return
        if stopping:
            return


def read_interval(device: torch.device, log_every: int) -> int:
    """How often to read the scalars back: every step on the CPU (cheap), else on logging steps only."""
    return 1 if device.type == "cpu" else log_every


def base_model(model: nn.Module) -> nn.Module:
    """The model inside any DistributedDataParallel or torch.compile wrapper."""
    base = getattr(model, "module", model)  # DistributedDataParallel wraps the model as .module
    return getattr(base, "_orig_mod", base)  # torch.compile keeps it as ._orig_mod


def trainable(model: nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """Names and parameters of the model inside any DistributedDataParallel or torch.compile wrapper."""
    named = [(n, p) for n, p in base_model(model).named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def loss_scale(scaler: torch.amp.GradScaler) -> Optional[torch.Tensor]:
    """The GradScaler's current scale as a device tensor (no sync), or None when it is disabled."""
    return getattr(scaler, "_scale", None) if scaler.is_enabled() else None


def read_back(t: torch.Tensor) -> list:
    """The engine's only device→host read of its numbers (one per step on the CPU, one per logging
    step on an accelerator). benchmarks/cuda_check.py wraps it to allow exactly these syncs."""
    return t.tolist()


class NonFiniteCheck:
    """The non-finite policy. On the CPU every step is judged before its update: ``stop`` raises
    :class:`NonFiniteError` with the model still at the last good step, ``skip`` skips the update (at
    most ``max_skips`` times). With deferred reads a non-finite value is found at the next read-back
    (the record stream still ends at the last good step). An fp16 overflow (finite loss, overflowing
    gradients) is neither: the GradScaler skips that update and lowers its scale."""

    def __init__(self, guard: Guard, names: list[str], scaled: bool, last_good: int):
        self.guard, self.names, self.scaled = guard, names, scaled
        self.skips = 0
        self.last_good = last_good

    def core(self, values: list[float]) -> list[float]:
        return values[:2 + len(self.names)]

    def overflow(self, values: list[float]) -> bool:
        core = self.core(values)
        return self.scaled and math.isfinite(core[0]) and not all(map(math.isfinite, core))

    def finite(self, values: list[float]) -> bool:
        return all(map(math.isfinite, self.core(values)))

    def allows_update(self, step: int, values: list[float]) -> bool:
        if self.finite(values) or self.overflow(values):
            return True
        if self.guard.on_nonfinite == "stop" or self.skips >= self.guard.max_skips:
            raise NonFiniteError(self.message(step, values), step, self.last_good, cause=self.cause(values))
        self.skips += 1
        return False

    def after_update(self, step: int, values: list[float], model_step: int) -> None:
        if not (self.finite(values) or self.overflow(values)):
            raise NonFiniteError(self.message(step, values), step, self.last_good, model_step, self.cause(values))
        self.last_good = step

    def cause(self, values: list[float]) -> str:
        """What went non-finite: the loss and the first parameter whose gradient did."""
        core = self.core(values)
        first = next((n for n, v in zip(self.names, core[2:]) if not math.isfinite(v)), None)
        grads = f"first non-finite gradient: {first}" if first else "all gradients finite"
        extra = f"after skipping {self.skips} step(s): " if self.skips else ""
        return f"{extra}loss {core[0]:.4g}, {grads}"

    def message(self, step: int, values: list[float]) -> str:
        cause = self.cause(values)
        sep = " " if self.skips else ": "
        return (f"non-finite value at step {step}{sep}{cause}; "
                "lower optimizer.lr, set train.clip_grad_norm, or run with --detect-anomaly to find the operation")


class _Pending(NamedTuple):
    step: int
    stats: torch.Tensor  # [loss, total norm, per-parameter norms..., (loss scale)] on the device
    values: Optional[list[float]]  # the same, already read (exact mode)
    ratio: Optional[torch.Tensor]  # ‖Δw‖/‖w‖ of the update (when measured)
    lr: float
    elapsed: float
    updated: bool  # False: the update was skipped (non-finite values, skip mode)
    diag: Optional[torch.Tensor] = None  # the probe's numbers (logging steps)


class ReadBack:
    """The steps' device scalars, read to the host in one ``.tolist()`` per read-back.

    :meth:`add` keeps a step; :meth:`flush` reads what is kept and yields the records, built in one
    place (:meth:`record`). ``exact`` (every step, always in skip mode): :meth:`now` reads a step's
    scalars before its update so that the non-finite check can act on them; what is measured after the
    update (the update ratio, the probe's numbers) is read at the flush, in one read.
    """

    def __init__(self, names: list[str], check: NonFiniteCheck, *, every: int, flush_every: tuple[int, ...],
                 reduce: Optional[Callable], clip: Optional[float], scaled: bool, probe=None):
        self.names, self.check, self.clip, self.scaled, self.probe = names, check, clip, scaled, probe
        self.every, self.flush_every = max(1, every), tuple(n for n in flush_every if n)
        self.reduce = reduce or (lambda t: t)
        self.exact = self.every == 1 or check.guard.on_nonfinite == "skip"
        if self.exact:
            self.every = 1
        self.pending: list[tuple] = []

    def now(self, stats: torch.Tensor) -> list[float]:
        return read_back(self.reduce(stats))

    def add(self, step: int, stats: torch.Tensor, values: Optional[list[float]], ratio: Optional[torch.Tensor],
            lr: float, elapsed: float, updated: bool, diag: Optional[torch.Tensor] = None) -> None:
        self.pending.append(_Pending(step, stats, values, ratio, lr, elapsed, updated, diag))

    def reads_at(self, step: int, last: int, stopping: bool) -> bool:
        return (len(self.pending) >= self.every or step == last or stopping
                or any(step % n == 0 for n in self.flush_every))

    def flush(self) -> Iterator[StepRecord]:
        pending, self.pending = self.pending, []
        if self.exact:  # the scalars were read before each update; what was measured after it remains
            after = [_after(p) for p in pending if p.ratio is not None or p.diag is not None]
            measured = iter(read_back(_padded(after)) if after else [])
            for p in pending:
                self.check.last_good = p.step
                row = next(measured) if p.ratio is not None or p.diag is not None else []
                yield self.record(p, p.values, *self._extras(p, row, 0))
            return
        # deferred: one 2-D read of every kept row; the update ratio and the probe's numbers (when
        # measured) follow the scalars, and shorter rows are padded
        rows = [_cat(p.stats, *_after(p)) for p in pending]
        table = read_back(self.reduce(_padded(rows))) if rows else []
        width = len(pending[0].stats) if pending else 0
        for p, row in zip(pending, table):
            try:
                self.check.after_update(p.step, row, pending[-1].step)
            except NonFiniteError as e:
                e.record = self.record(p, row[:width], None)
                raise
            yield self.record(p, row[:width], *self._extras(p, row, width))

    def _extras(self, p: "_Pending", row: list[float], at: int) -> tuple[Optional[float], Optional[list[float]]]:
        """The update ratio and the probe's numbers of a read row, from column ``at`` on."""
        ratio = None
        if p.ratio is not None:
            ratio, at = row[at], at + 1
        return ratio, row[at:at + self.probe.width] if p.diag is not None else None

    def record(self, p: "_Pending", values: list[float], ratio: Optional[float],
               diag: Optional[list[float]] = None) -> StepRecord:
        """The one place a :class:`StepRecord` is built."""
        n = len(self.names)
        skipped = not p.updated or self.check.overflow(values)
        return StepRecord(step=p.step, loss=values[0], grad_norm=values[1],
                          grad_norms=dict(zip(self.names, values[2:2 + n])), lr=p.lr, time=p.elapsed,
                          update_ratio=ratio,
                          clipped=None if self.clip is None else (not skipped and values[1] > self.clip),
                          skipped=skipped, loss_scale=values[2 + n] if self.scaled else None,
                          **(self.probe.unpack(diag) if diag is not None else {}))


def _after(p: _Pending) -> list[torch.Tensor]:
    """What a kept step measured after its update: the update ratio, the probe's numbers."""
    return ([p.ratio.reshape(1)] if p.ratio is not None else []) + ([p.diag] if p.diag is not None else [])


def _cat(*parts: torch.Tensor) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _padded(rows: list) -> torch.Tensor:
    """Rows (1-D tensors, or lists of parts) stacked into one 2-D tensor, the short ones padded with NaN."""
    rows = [_cat(*r) if isinstance(r, list) else r for r in rows]
    width = max(len(r) for r in rows)
    return torch.stack([r if len(r) == width else torch.nn.functional.pad(r, (0, width - len(r)), value=math.nan)
                        for r in rows])

"""`backprop train`: config → run → engine, feeding the metrics file, the reporter and checkpoints.

Nothing here prints; the reporter passed in does. Outcomes: a summary (done), Interrupted (exit
130, after the current step, with metrics flushed and --save written), NonFiniteError (exit 3, with
metrics up to the last good step and --save holding the last good state).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol

from backprop_cli import distributed
from backprop_cli.build import Run, build_run, describe_run
from backprop_cli.checkpoint import load_checkpoint, load_optimizer, load_weights, restore_rng, save_checkpoint
from backprop_cli.config import Config, default_log_every, optimizer_hyperparams
from backprop_cli.engine import NonFiniteError, StepRecord, Summary, Tracker, train
from backprop_cli.errors import EXIT_INTERRUPTED, BackpropError, CheckpointError, OutputError
from backprop_cli.distributed import under_torchrun
from backprop_cli.outputs import METRICS_SUFFIXES, MetricsWriter, check_writable


class Reporter(Protocol):
    def start(self, info: dict, log_every: int) -> None: ...
    def step(self, record: StepRecord) -> None: ...
    def finish(self, summary: Summary, outputs: dict[str, str], status: str) -> None: ...


@dataclass
class TrainOptions:
    metrics: Optional[Path] = None
    save: Optional[Path] = None
    save_every: Optional[int] = None
    resume: Optional[Path] = None
    log_every: Optional[int] = None
    zero_grad: bool = True
    detect_anomaly: bool = False
    tensorboard: Optional[Path] = None


class Interrupted(BackpropError):
    exit_code = EXIT_INTERRUPTED


# --------------------------------------------------------------------------- resume


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """``key: old → new`` for every key that differs between two plain configs."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k, '(unset)')} → {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def resume_from(run: Run, path: Path) -> tuple[int, list[str]]:
    """Load weights, optimizer, scheduler and RNG state; returns (saved step, what changed).

    A different model, optimizer or scheduler is refused; other changes (lr, steps, ...) are applied.
    """
    state = load_checkpoint(path)
    saved, current = state["config"], run.cfg.plain()
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the checkpoint's config is not a mapping")
    for section, what in (("model", "model"), ("optimizer.name", "optimizer"), ("scheduler.name", "scheduler")):
        head, _, key = section.partition(".")
        old = (saved.get(head) or {}) if key else saved.get(head)
        old = old.get(key) if key and isinstance(old, dict) else old
        new = current[head][key] if key else current[head]
        if old is not None and old != new:
            diffs = config_changes({head: saved.get(head)}, {head: current[head]})
            raise CheckpointError(f"{path}: --resume needs the same {what} as the checkpoint; "
                                  f"the config changes {'; '.join(diffs)}")
    load_weights(run.model, state, path)
    load_optimizer(run.optimizer, state, path)
    changes = config_changes(saved, current)
    if run.scheduler is not None and isinstance(state.get("scheduler"), dict):
        # the schedule's position comes from the checkpoint, its shape from the config
        for key in SCHEDULE_POSITION:
            if key in state["scheduler"]:
                setattr(run.scheduler, key, state["scheduler"][key])
        if any(c.startswith(("train.steps", "train.epochs", "scheduler.")) for c in changes):
            _lr_from_schedule(run.scheduler)
    hyper = optimizer_hyperparams(run.cfg.optimizer)
    for group in run.optimizer.param_groups:
        old_lr = group["lr"]
        for key, value in hyper.items():
            if key != "lr":
                group[key] = value
        saved_lr = (saved.get("optimizer") or {}).get("lr")
        if saved_lr is not None and saved_lr != hyper["lr"]:
            # a new base lr: the schedule (if any) continues from the same position, scaled
            group["lr"] = hyper["lr"] if run.scheduler is None else old_lr * hyper["lr"] / saved_lr
            if "initial_lr" in group:
                group["initial_lr"] = hyper["lr"]
    if run.scheduler is not None and (saved.get("optimizer") or {}).get("lr") not in (None, hyper["lr"]):
        run.scheduler.base_lrs = [hyper["lr"] for _ in run.scheduler.base_lrs]
    restore_rng(state)
    step = int(state["step"])
    if step >= run.steps:
        raise CheckpointError(f"{path}: the checkpoint is at step {step} and the run has {run.steps} steps: "
                              f"nothing to resume; raise train.steps (e.g. --steps {step + run.steps})")
    return step, changes


SCHEDULE_POSITION = ("last_epoch", "_step_count", "_last_lr", "base_lrs")


def _lr_from_schedule(scheduler) -> None:
    """Set the optimizer's lr to what the (changed) schedule gives at the saved position."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        closed = getattr(scheduler, "_get_closed_form_lr", None)
        lrs = closed() if closed is not None else scheduler.get_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)


# --------------------------------------------------------------------------- signals


class StopRequest:
    """Set by SIGINT/SIGTERM: finish the current step, then stop. A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- TensorBoard


class TensorBoardLog:
    """Scalars every step; gradient and weight histograms every ``log_every`` steps."""

    def __init__(self, folder: Path, model, log_every: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise OutputError("--tensorboard needs the tensorboard package: pip install 'backprop-cli[tensorboard]'") from None
        if Path(folder).exists() and not Path(folder).is_dir():
            raise OutputError(f"{folder}: --tensorboard needs a folder, and this is a file")
        self.writer = SummaryWriter(log_dir=str(folder))
        self.model, self.log_every = model, log_every

    def write(self, rec: StepRecord) -> None:
        w = self.writer
        w.add_scalar("loss", rec.loss, rec.step)
        w.add_scalar("grad_norm/total", rec.grad_norm, rec.step)
        for name, value in rec.grad_norms.items():
            w.add_scalar(f"grad_norm/{name}", value, rec.step)
        w.add_scalar("lr", rec.lr, rec.step)
        if rec.step % self.log_every == 0 or rec.step == 1:
            for name, p in self.model.named_parameters():
                w.add_histogram(f"weight/{name}", p.detach().cpu(), rec.step)
                if p.grad is not None:
                    w.add_histogram(f"grad/{name}", p.grad.detach().cpu(), rec.step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


# --------------------------------------------------------------------------- the run


def run_training(cfg: Config, opts: TrainOptions, reporter: Reporter) -> Summary:
    if opts.save_every is not None and opts.save is None:
        raise OutputError("--save-every needs --save PATH (where to write the checkpoints)")
    if opts.save is not None:
        check_writable(opts.save, what="checkpoint")
    ctx = None
    if under_torchrun():
        ctx = distributed.start(cfg.distributed.backend, cfg.device)
    run = build_run(cfg, device=ctx.device if ctx is not None else None)
    start, changes = (0, [])
    if opts.resume is not None:
        start, changes = resume_from(run, opts.resume)
    log_every = opts.log_every or cfg.train.log_every or default_log_every(run.steps)
    sync_every = sync_interval(run.device, log_every)
    main = ctx is None or ctx.is_main
    if not main:
        reporter = _Silent()
    extra = (("clipped",) if cfg.train.clip_grad_norm is not None else ()) + \
            (("skipped",) if cfg.train.on_nonfinite == "skip" or cfg.precision == "fp16" else ()) + \
            (("loss_scale",) if cfg.precision == "fp16" else ())
    if main and opts.metrics is not None:
        check_writable(opts.metrics, METRICS_SUFFIXES, "metrics")

    stop = StopRequest()
    model, batches, loss_fn, reduce, should_stop = run.model, run.batches, run.loss_fn, None, stop
    if ctx is not None:
        batches = distributed.ShardedBatches(run.batches, ctx)
        loss_fn = distributed.ShardLoss(run.loss_fn, batches)
        model = ctx.wrap(run.model)
        reduce = ctx.reduce_stats
        should_stop = distributed.AgreedStop(stop, ctx)
    if cfg.compile:
        import torch

        model = torch.compile(model)

    tboard = TensorBoardLog(opts.tensorboard, run.model, log_every) if main and opts.tensorboard else None
    info = describe_run(run)
    info["start_step"] = start
    if opts.detect_anomaly:
        info["detect_anomaly"] = True
    if ctx is not None:
        info["distributed"] = {"world": ctx.world, "backend": ctx.backend}
    if opts.resume is not None:
        info["resume"] = {"path": str(opts.resume), "step": start, "changes": changes}
    reporter.start(info, log_every)

    def save(step: int) -> None:
        if main:
            save_checkpoint(opts.save, model=run.model, optimizer=run.optimizer, step=step, config=cfg.plain(),
                            scheduler=run.scheduler, device=run.device)

    metrics = MetricsWriter(opts.metrics, run.param_names, extra=extra) if main and opts.metrics else None
    tracker = Tracker()
    last_step = start
    status, failure = "done", None
    anomaly = AnomalyMode() if opts.detect_anomaly else None
    try:
        with stop_on_signals(stop), (anomaly or nullcontext()):
            for rec in train(model, loss_fn, run.optimizer, batches, run.steps, start_step=start,
                             zero_grad=opts.zero_grad, sync_every=sync_every,
                             clip_grad_norm=cfg.train.clip_grad_norm, scheduler=run.scheduler,
                             on_nonfinite=cfg.train.on_nonfinite, max_skips=cfg.train.max_skips,
                             should_stop=should_stop, flush_every=opts.save_every, precision=cfg.precision,
                             reduce_stats=reduce):
                last_step = rec.step
                tracker.update(rec)
                if metrics is not None:
                    metrics.write(rec.as_dict())
                if tboard is not None:
                    tboard.write(rec)
                reporter.step(rec)
                if opts.save_every and rec.step % opts.save_every == 0 and rec.step != run.steps:
                    save(rec.step)
        if should_stop():
            status = "interrupted"
    except NonFiniteError as e:
        status, failure = "stopped", e
    except BaseException as e:
        if anomaly is not None and isinstance(e, RuntimeError) and "nan values" in str(e):
            status = "stopped"
            failure = NonFiniteError(f"autograd anomaly at step {last_step + 1}: {anomaly.describe(e)}",
                                     last_step + 1, last_step)
        else:
            if metrics is not None:
                metrics.abort()
            if tboard is not None:
                tboard.close()
            raise

    summary = tracker.finish()
    outputs: dict[str, str] = {}
    if metrics is not None:
        metrics.close()
        outputs["metrics"] = str(opts.metrics)
    if tboard is not None:
        tboard.close()
        outputs["tensorboard"] = str(opts.tensorboard)
    if opts.save is not None and main:
        model_step = getattr(failure, "model_step", last_step) if failure is not None else last_step
        if failure is None or (model_step == last_step and _finite_model(run)):
            save(last_step)
            outputs["checkpoint"] = f"{opts.save} (step {last_step})"
        else:
            outputs["checkpoint"] = f"not written: the model is past its last good step {last_step}"
    reporter.finish(summary, outputs, status)
    if failure is not None:
        raise failure
    if status == "interrupted":
        name = signal.Signals(stop.signal).name if stop.signal else "signal"
        raise Interrupted(f"interrupted by {name} after step {last_step}")
    return summary


class AnomalyMode:
    """``torch.autograd.detect_anomaly(check_nan=True)`` without its two long warnings on stderr.

    torch warns that the mode is on (the start panel says so instead) and, when a backward function
    returns NaN, prints the whole traceback of the forward call that made it; that traceback is kept
    here and reduced to its last frame outside torch (the line of the model that ran the operation).
    Other warnings pass through untouched.
    """

    ENABLED = "Anomaly Detection has been enabled"
    DETECTED = "Error detected in"
    FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]+\n\s+(.+)')

    def __init__(self):
        self.forward_traces: list[str] = []

    def __enter__(self):
        import torch

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("always", message=self.DETECTED)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if text.startswith(self.DETECTED):
                self.forward_traces.append(text)
            elif not text.startswith(self.ENABLED):
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        self._mode = torch.autograd.detect_anomaly(check_nan=True)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._warnings.__exit__(*exc)
        return False

    def describe(self, error: BaseException) -> str:
        """torch's first error line, and where the forward made the operation (when torch said)."""
        text = str(error).strip()
        first = text.splitlines()[0].rstrip(".") if text else "anomaly detected"
        if not self.forward_traces:
            return first
        torch_dir = os.sep + "torch" + os.sep
        frames = [f for f in self.FRAME.findall(self.forward_traces[-1]) if torch_dir not in f[0]]
        if not frames:
            return first
        path, line, code = frames[-1]
        return f"{first}; the forward ran it at {Path(path).name}:{line}: {code.strip()}"


def sync_interval(device, log_every: int) -> int:
    """How often the engine reads scalars back: every step on the CPU (cheap), else on logging steps."""
    return 1 if device.type == "cpu" else log_every


class _Silent:
    """The reporter of ranks other than 0."""

    def start(self, info: dict, log_every: int) -> None:
        pass

    def step(self, record: StepRecord) -> None:
        pass

    def finish(self, summary: Summary, outputs: dict[str, str], status: str) -> None:
        pass


def _finite_model(run: Run) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in run.model.parameters())

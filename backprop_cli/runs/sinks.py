"""Where a training run's records go. Each stage is a :class:`Sink` with the same three methods:

- ``record(rec)``: one step's record, in order;
- ``close(outcome) -> {name: text}``: the run ended (done, stopped or interrupted); finish the output
  and say what was written;
- ``abort()``: the run failed unexpectedly; leave what existed before untouched.

The stages a record passes, in order (runs.training.Stages names them): the first two complete the
record (:class:`EpochSink`: epoch and epoch_loss; :class:`EvaluationSink`: val_* and train_*), every
later one only reads it — the summary (:class:`TrackerSink`), the console (:class:`ReporterSink`), the
warnings (:class:`HealthSink`), then the outputs asked for (metrics, TensorBoard, checkpoint, plot).

A new output (a plot, validation rows) is a new sink, not a new branch in the training loop.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from backprop_cli.io.checkpoint import last_good_path
from backprop_cli.errors import OutputClosed, OutputError
from backprop_cli.core.health import HealthMonitor
from backprop_cli.io.paths import METRICS_SUFFIXES, PLOT_SUFFIXES, check_folder, check_writable
from backprop_cli.io.metrics import MetricsWriter
from backprop_cli.core.records import StepRecord, Tracker


@dataclass
class Outcome:
    """How a run ended: ``status`` done | stopped | interrupted, with the reason when not done."""

    status: str
    last_step: int  # the last step whose record was handled
    model_step: int  # the step the model's weights are at (> last_step after a deferred non-finite stop)
    reason: Optional[str] = None
    failed: bool = False  # the run failed (non-finite values, an output error): never replace good files

    @property
    def model_is_last_good(self) -> bool:
        return self.model_step == self.last_step


class Sink:
    """A stage of the run's records (see the module's docstring); by default each method does nothing."""

    def record(self, rec: StepRecord) -> None:
        pass

    def close(self, outcome: Outcome) -> dict[str, str]:
        """The run ended: finish the output and say what was written ({name: text})."""
        return {}

    def abort(self) -> None:
        """The run failed unexpectedly: leave what existed before untouched."""


class EpochSink(Sink):
    """Tags each record with its epoch and, at the last step of an epoch whose every step this run took,
    with ``epoch_loss``: the mean of the batch losses weighted by the rows in each batch, i.e. the mean
    loss over the epoch's rows (skipped steps left out). Goes before the sinks that read records."""

    def __init__(self, per_epoch: int, rows_of: Callable[[int], int]):
        self.per_epoch, self.rows_of = per_epoch, rows_of
        self.epoch, self.seen, self.total, self.rows = 0, 0, 0.0, 0

    def record(self, rec: StepRecord) -> None:
        epoch, k = divmod(rec.step - 1, self.per_epoch)
        if epoch + 1 != self.epoch:
            self.epoch, self.seen, self.total, self.rows = epoch + 1, 0, 0.0, 0
        rec.epoch = self.epoch
        self.seen += 1
        if not rec.skipped:
            rows = self.rows_of(k)
            self.total += rec.loss * rows
            self.rows += rows
        if k == self.per_epoch - 1 and self.seen == self.per_epoch and self.rows:
            rec.epoch_loss = self.total / self.rows


class EvaluationSink(Sink):
    """Every ``every`` steps (and at the last step) measures the model, exactly at that step, on the
    validation rows and the training rows, and puts the numbers in the step's record (``val_loss``, ...).
    Keeps the best ``val_loss`` (``--save-best`` writes the model there) and stops the run early when
    ``val_loss`` has not improved by more than ``min_delta`` for ``patience`` evaluations.
    ``measure()`` returns ``(record keys, validation detail)``; ``save_best(step, val_loss)`` writes the
    model at a new best and says what it wrote."""

    def __init__(self, measure: Callable[[], tuple[dict, dict]], every: int, total: int, *,
                 patience: Optional[int] = None, min_delta: float = 0.0,
                 save_best: Optional[Callable[[int, float], str]] = None,
                 snapshot: Optional[Callable[[], object]] = None,
                 remeasure: Optional[Callable[[], tuple[dict, dict]]] = None):
        self.measure, self.every, self.total = measure, every, total
        # measure() without its side effects (a reduce_on_plateau step): the numbers of a restored copy
        self.remeasure = remeasure
        self.patience, self.min_delta, self.save_best = patience, min_delta, save_best
        # restore_best: ``snapshot()`` copies the run's state at each new best (None: not asked for)
        self.snapshot = snapshot
        self.best_state: Optional[object] = None
        self.best_keys: Optional[dict] = None
        self.best_detail: Optional[dict] = None
        self.restored_step: Optional[int] = None
        self.best_loss, self.best_step = math.inf, 0
        self.reference = math.inf  # the val_loss that early stopping counts improvements against
        self.waited = 0
        self.stop_requested = False
        self.last: Optional[dict] = None
        self.detail: Optional[dict] = None
        self.best_written: Optional[str] = None

    def evaluates_at(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def record(self, rec: StepRecord) -> None:
        if not self.evaluates_at(rec.step) or rec.skipped:
            return
        keys, self.detail = self.measure()
        rec.evaluation = keys
        self.last = keys
        loss = keys["val_loss"]
        best = loss < self.best_loss
        if best:
            self.best_loss, self.best_step = loss, rec.step
            self.best_keys, self.best_detail = keys, self.detail
            if self.snapshot is not None:
                self.best_state = self.snapshot()
        if self.patience is not None:
            if loss < self.reference - self.min_delta:
                self.reference, self.waited = loss, 0
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    self.stop_requested = True
        if best and self.save_best is not None:  # after the counter: the file holds this step's state()
            self.best_written = self.save_best(rec.step, loss)

    def state(self) -> dict:
        """What a checkpoint keeps (its ``evaluation`` entry) so that a resumed run goes on as the
        uninterrupted one: the best val_loss and its step (--save-best replaces its file only with a better
        model) and early stopping's reference and counter. None stands for "no evaluation yet" (infinity)."""
        def finite(v: float) -> Optional[float]:
            return float(v) if math.isfinite(v) else None

        return {"best_loss": finite(self.best_loss), "best_step": int(self.best_step),
                "reference": finite(self.reference), "waited": int(self.waited)}

    def continue_from(self, saved: Optional[dict]) -> None:
        """Go on from a checkpoint's :meth:`state` (one written before checkpoints had it: from scratch).
        ``stop_requested`` is then True when the saved counter already reaches this run's patience."""
        if not saved:
            return

        def number(v: Optional[float]) -> float:
            return math.inf if v is None else float(v)

        self.best_loss, self.best_step = number(saved["best_loss"]), int(saved["best_step"])
        self.reference, self.waited = number(saved["reference"]), int(saved["waited"])
        if self.snapshot is not None and saved.get("best_state") is not None:  # restore_best: the checkpoint's
            self.best_state = saved["best_state"]  # copy (its numbers are measured again when it is put back)
        self.stop_requested = self.patience is not None and self.waited >= self.patience

    def summary(self) -> Optional[dict]:
        """``validation`` of the summary: the last evaluation's numbers, and the best val_loss and its step."""
        if self.last is None:
            return None
        shown = self.best_keys if self.restored_step is not None else self.last
        out = {k[len("val_"):]: v for k, v in shown.items() if k.startswith("val_")}
        out.update(best_step=self.best_step, best_loss=self.best_loss)
        if self.restored_step is not None:
            out["restored_best"] = self.restored_step
        return out

    def restore(self, put_back: Callable[[object], None]) -> Optional[int]:
        """restore_best: put the best evaluation's state back (``put_back(state)``); its step, or None when
        there is none to restore. From then on the summary's numbers and the detail are the best's."""
        if self.best_state is None:
            return None
        put_back(self.best_state)
        if self.best_keys is None:  # the checkpoint's copy (--resume): the same model on the same rows
            self.best_keys, self.best_detail = (self.remeasure or self.measure)()
        self.restored_step = self.best_step
        self.detail = self.best_detail
        return self.best_step

    def close(self, outcome: Outcome) -> dict[str, str]:
        if self.save_best is None:
            return {}
        if self.best_written is None:
            return {"best checkpoint": "not written: no evaluation finished"}
        return {"best checkpoint": self.best_written}


class TrackerSink(Sink):
    """Folds the records into the run's :class:`~backprop_cli.core.records.Summary`."""

    def __init__(self) -> None:
        self.tracker = Tracker()
        self.summary = self.tracker.summary

    def record(self, rec: StepRecord) -> None:
        self.tracker.record(rec)

    def close(self, outcome: Outcome) -> dict[str, str]:
        self.summary = self.tracker.finish()
        return {}


class ReporterSink(Sink):
    """Hands each record to the reporter (the table on the terminal). When the reader of the output
    goes away (``backprop train ... | head``), ``closed`` is set and the run stops after this step."""

    def __init__(self, reporter) -> None:
        self.reporter = reporter
        self.closed = False

    def record(self, rec: StepRecord) -> None:
        self._deliver(self.reporter.step, rec)

    def warn(self, text: str) -> None:
        """A warning for the reporter (from :class:`HealthSink`), with the same care for a closed output."""
        self._deliver(self.reporter.warn, text)

    def _deliver(self, show, item) -> None:
        if self.closed:
            return
        try:
            show(item)
        except (OutputClosed, BrokenPipeError):
            self.closed = True


class HealthSink(Sink):
    """train's warnings (:class:`~backprop_cli.core.health.HealthMonitor`): each new one goes to the reporter
    (a line in the table) at once; all of them end in the summary."""

    def __init__(self, reporter, activation: str = "", init: str = "default", norm: str = "none",
                 residual: Optional[bool] = None) -> None:
        self.reporter = reporter
        self.monitor = HealthMonitor(activation, init, norm, residual)

    @property
    def warnings(self) -> list[str]:
        return list(self.monitor.warnings)

    def record(self, rec: StepRecord) -> None:
        for text in self.monitor.record(rec):
            self.reporter.warn(text)


class MetricsSink(Sink):
    """Every step's record in ``--metrics PATH`` (.jsonl or .csv), written atomically at the end."""

    def __init__(self, path: Path, param_names: list[str], extra: tuple[str, ...] = (),
                 nested: tuple[tuple[str, ...], ...] = ()):
        self.path = check_writable(path, METRICS_SUFFIXES, "metrics")
        self.writer = MetricsWriter(path, param_names, extra=extra, nested=nested)

    def record(self, rec: StepRecord) -> None:
        self.writer.write(rec.as_dict())

    def close(self, outcome: Outcome) -> dict[str, str]:
        self.writer.close()
        return {"metrics": str(self.path)}

    def abort(self) -> None:
        self.writer.abort()


class TensorBoardSink(Sink):
    """Scalars every step; gradient and weight histograms every ``log_every`` steps.

    TensorBoard writes from a thread of its own and raises its OSError (disk full, a read-only folder)
    at a later call: any of them is one OutputError naming the folder and the cause, at the start or
    at the step whose write failed (the run then closes its other outputs, exit 2).
    """

    def __init__(self, folder: Path, model, log_every: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise OutputError("--tensorboard needs the tensorboard package: pip install 'backprop-cli[tensorboard]'") from None
        check_folder(folder, "TensorBoard folder")
        self.folder = folder
        _quiet_writer_threads()
        self.writer = self._guarded(lambda: SummaryWriter(log_dir=str(folder)))
        self.model, self.log_every = model, log_every

    def _guarded(self, call):
        try:
            return call()
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot write: {e.strerror or e}") from None

    def record(self, rec: StepRecord) -> None:
        self._guarded(lambda: self._record(rec))

    def _record(self, rec: StepRecord) -> None:
        w = self.writer
        w.add_scalar("loss", rec.loss, rec.step)
        w.add_scalar("grad_norm/total", rec.grad_norm, rec.step)
        for name, value in rec.grad_norms.items():
            w.add_scalar(f"grad_norm/{name}", value, rec.step)
        w.add_scalar("lr", rec.lr, rec.step)
        if rec.epoch_loss is not None:
            w.add_scalar("epoch_loss", rec.epoch_loss, rec.step)
        for key, value in (rec.evaluation or {}).items():  # val_loss, val_accuracy, train_loss, ...
            w.add_scalar(key, value, rec.step)
        for layer, stats in (rec.activations or {}).items():
            for key, value in stats.items():
                w.add_scalar(f"activations/{layer}/{key}", value, rec.step)
        for name, value in (rec.grad_to_weight or {}).items():
            w.add_scalar(f"grad_to_weight/{name}", value, rec.step)
        for name, value in (rec.update_ratios or {}).items():
            w.add_scalar(f"update_ratio/{name}", value, rec.step)
        if rec.step % self.log_every == 0 or rec.step == 1:
            for name, p in self.model.named_parameters():
                w.add_histogram(f"weight/{name}", p.detach().cpu(), rec.step)
                if p.grad is not None:
                    w.add_histogram(f"grad/{name}", p.grad.detach().cpu(), rec.step)

    def close(self, outcome: Outcome) -> dict[str, str]:
        self._guarded(self.writer.flush)
        self._guarded(self.writer.close)
        return {"tensorboard": str(self.folder)}

    def abort(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass  # the write that failed was reported already


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread re-raises its OSError after storing it for the main thread (where
    it becomes one OutputError line): its own traceback ("Exception in thread ...") is not printed."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.quiet_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class CheckpointSink(Sink):
    """``--save PATH``: every ``save_every`` steps, and at the end (also after Ctrl-C).

    A run that failed (a non-finite value) saves its last good state only while the weights are still
    at it, and never over a file this run did not write: an existing ``good.pt`` stays as it was and the
    state goes beside it, to ``good.last-good.pt`` (:func:`backprop_cli.io.checkpoint.last_good_path`).
    """

    def __init__(self, path: Path, save: Callable[[Path, int], None], save_every: Optional[int], total_steps: int,
                 is_finite: Callable[[], bool]):
        self.path = check_writable(path, what="checkpoint")
        self.save, self.save_every, self.total, self.is_finite = save, save_every, total_steps, is_finite
        self.wrote = False  # this run has written self.path already (--save-every)

    def record(self, rec: StepRecord) -> None:
        if self.save_every and rec.step % self.save_every == 0 and rec.step != self.total:
            self.save(self.path, rec.step)
            self.wrote = True

    def close(self, outcome: Outcome) -> dict[str, str]:
        step = outcome.last_step
        if not outcome.failed:
            step = outcome.model_step  # restore_best: the step of the best evaluation
            self.save(self.path, step)
            return {"checkpoint": f"{self.path} (step {step})"}
        if not (outcome.model_is_last_good and self.is_finite()):
            return {"checkpoint": f"not written: the model is past its last good step {step}"}
        target = self.path if self.wrote or not os.path.lexists(self.path) else last_good_path(self.path)
        self.save(target, step)
        kept = "" if target == self.path else f"; {self.path} is kept as it was"
        return {"checkpoint": f"{target} (step {step}): the last good state{kept}"}


class PlotSink(Sink):
    """``--plot PATH``: the dashboard of the run, drawn at the end from every record (also after Ctrl-C or a
    stop: what the run recorded) by ``draw(path, {run label: records}, title)``: the reporter's, so that
    the drawing stays in render/ (render.plots.dashboard)."""

    def __init__(self, path: Path, draw: Callable[..., None], title: str = ""):
        self.path = check_writable(path, PLOT_SUFFIXES, "plot")
        self.draw, self.title = draw, title
        self.records: list[dict] = []

    def record(self, rec: StepRecord) -> None:
        self.records.append(rec.as_dict())

    def close(self, outcome: Outcome) -> dict[str, str]:
        if not self.records:
            return {"plot": "not written: no step completed"}
        self.draw(self.path, {"": self.records}, title=self.title)
        return {"plot": str(self.path)}


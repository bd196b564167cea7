"""`backprop train`: a built run, the engine, and the sinks its records go to.

Nothing here prints; the reporter passed in does. Outcomes: a summary (done), Interrupted (exit 130,
after the current step, with the outputs closed and --save written), NonFiniteError (exit 3, with
metrics up to the last good step and --save holding the last good state), an OutputError from a
sink (exit 2, the other outputs still closed).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from backprop_cli.runs import distributed
from backprop_cli.runs.options import TrainOptions
from backprop_cli.core.anomaly import AnomalyMode
from backprop_cli.core.build import Run, build_run, describe_run
from backprop_cli.runs.resume import resume_from
from backprop_cli.io.checkpoint import save_checkpoint
from backprop_cli.config import Config, default_log_every
from backprop_cli.data.tables import Table
from backprop_cli.core.diagnostics import Diagnostics
from backprop_cli.core.engine import Loop, NonFiniteError, read_interval, run_steps
from backprop_cli.errors import EXIT_INTERRUPTED, BackpropError, OutputClosed, OutputError
from backprop_cli.core.records import StepRecord, Summary, is_logging_step
from backprop_cli.io.signals import StopRequest, stop_on_signals
from backprop_cli.runs.sinks import (CheckpointSink, EpochSink, EvaluationSink, HealthSink, MetricsSink, Outcome,
                                     PlotSink, ReporterSink, Sink, TensorBoardSink, TrackerSink)


class Reporter(Protocol):
    def start(self, info: dict, log_every: int) -> None: ...
    def step(self, record: StepRecord) -> None: ...
    def warn(self, text: str) -> None: ...
    def finish(self, summary: Summary, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> None: ...
    def dashboard(self, path: Path, runs: dict[str, list[dict]], title: str) -> None: ...  # for --plot


class Interrupted(BackpropError):
    exit_code = EXIT_INTERRUPTED


def metric_columns(cfg: Config, validation: bool = False) -> tuple[str, ...]:
    """The optional columns of this run's metrics records."""
    from backprop_cli.config import task_of
    from backprop_cli.core.records import TASK_METRICS

    evaluation: tuple[str, ...] = ()
    if validation:
        keys = ("loss", *TASK_METRICS[task_of(cfg.loss)])
        evaluation = tuple(f"{part}_{k}" for part in ("val", "train") for k in keys)
    return (("epoch", "epoch_loss") + evaluation
            + (("clipped",) if cfg.train.clip_grad_norm is not None else ())
            + (("skipped",) if cfg.train.on_nonfinite == "skip" or cfg.precision == "fp16" else ())
            + (("loss_scale",) if cfg.precision == "fp16" else ()))


def run_training(cfg: Config, opts: TrainOptions, reporter: Reporter, table: Optional[Table] = None) -> Summary:
    opts.check(cfg)
    ctx = distributed.start(cfg.distributed.backend, cfg.device) if distributed.under_torchrun() else None
    main = ctx is None or ctx.is_main
    run = build_run(cfg, dataset=table, device=ctx.device if ctx is not None else None)
    start, changes, evaluated = resume_from(run, opts.resume) if opts.resume is not None else (0, [], None)

    stop = StopRequest()
    shown = ReporterSink(reporter if main else _Silent())
    loop, reduce, should_stop = run.loop(), None, stop
    if ctx is not None:
        loop, reduce, should_stop = ctx.distribute(loop), ctx.reduce_stats, distributed.AgreedStop(stop, ctx)
    else:
        should_stop = _StopOrClosed(stop, shown)
    if cfg.compile:
        import torch

        loop.model = torch.compile(loop.model)

    evaluator = evaluation_sink(run, opts if main else TrainOptions())
    if evaluator is not None and opts.resume is not None:
        _continue_evaluation(evaluator, evaluated, opts.resume)
    log_every = opts.log_every or cfg.train.log_every or (
        default_log_every(run.steps) if evaluator is None
        else evaluator.every * default_log_every(-(-run.steps // evaluator.every)))  # rows at evaluations
    probe = Diagnostics.of(loop.model, cfg.model.activation.name,
                           lambda step: is_logging_step(step, start + 1, log_every, run.steps),
                           batch_size=run.batches.batch_size)
    stages = Stages(epoch=EpochSink(run.batches.per_epoch, run.batches.rows), evaluation=evaluator,
                    summary=TrackerSink(), console=shown,
                    health=HealthSink(shown, cfg.model.activation.name, cfg.model.init, cfg.model.norm,  # warns
                                      None if not cfg.model.residual_layers else not cfg.model.residual),  # via shown
                    outputs=_output_sinks(run, opts, log_every, probe, reporter, evaluator) if main else [])
    tracker, health = stages.summary, stages.health
    if main:
        try:
            reporter.start(_start_info(run, opts, ctx, start, changes, evaluator), log_every)
        except (OutputClosed, BrokenPipeError):
            shown.closed = True

    outcome, failure = _train(run, loop, stages, start, log_every, opts, reduce, should_stop, stop, probe)
    outcome = _restore_best(run, evaluator, outcome, failure)
    if shown.closed and failure is None and outcome.status == "interrupted" and not stop():
        outcome = Outcome("stopped", outcome.last_step, outcome.model_step, "output closed")
    # A first signal while the outputs are written and the summary shown only asks to stop (as during
    # the steps): they are finished, then the run exits 130; a second Ctrl-C still ends it at once.
    with stop_on_signals(stop):
        outputs, failure = _close(stages.all(), outcome, failure)
        tracker.summary.warnings = health.warnings
        if evaluator is not None:
            tracker.summary.validation = evaluator.summary()
            tracker.summary.evaluation = evaluator.detail
            fit = fit_warning(cfg, tracker.summary.validation, run.dataset.table)
            for note in (fit if outcome.status == "done" else None,
                         None if outcome.failed else _best_before_resume(evaluator, start)):
                if note is None:
                    continue
                tracker.summary.warnings = [*tracker.summary.warnings, note]
                if main:
                    try:
                        reporter.warn(note)
                    except (OutputClosed, BrokenPipeError):
                        shown.closed = True
        if main:  # after a closed output too: its console prints nothing more, a JSON on stdout still gets out
            try:
                reporter.finish(tracker.summary, outputs, outcome.status, outcome.reason)
            except (OutputClosed, BrokenPipeError):
                shown.closed = True
    if failure is not None:
        raise failure
    if shown.closed:
        raise OutputClosed()
    if outcome.status == "interrupted":
        raise Interrupted(f"interrupted by {stop.name} after step {outcome.last_step}")
    if stop():  # the signal came after the steps, while the outputs were written: they all were
        raise Interrupted(f"interrupted by {stop.name} after the last step ({outcome.last_step}), "
                          "once every output was written")
    return tracker.summary


def _close(sinks: list, outcome: Outcome, failure: Optional[BaseException]) -> tuple[dict[str, str],
                                                                                   Optional[BaseException]]:
    """Close every sink: one output that cannot be written (a full disk) loses only itself, the others
    are still written; its OutputError is the run's failure unless the run failed already. Anything
    else stops the closing: the sinks not closed yet are aborted (no temporary file stays)."""
    outputs: dict[str, str] = {}
    for i, sink in enumerate(sinks):
        try:
            outputs.update(sink.close(outcome))
        except OutputError as e:
            sink.abort()
            failure = failure or e
        except BaseException:
            for other in sinks[i:]:
                other.abort()
            raise
    return outputs, failure


def _train(run: Run, loop: Loop, stages: "Stages", start: int, log_every: int, opts: TrainOptions, reduce,
           should_stop, stop: StopRequest, probe: Diagnostics) -> tuple[Outcome, Optional[BaseException]]:
    """Feed every record to every stage, in order. Returns how the run ended and the error to raise once
    the stages are closed; an output that fails is dropped from them; an unexpected error aborts every
    stage and propagates."""
    evaluator = stages.evaluation
    sinks = stages.all()
    last, current = start, None
    anomaly = AnomalyMode() if opts.detect_anomaly else None
    steps = run_steps(loop, run.steps, start_step=start, guard=run.guard,
                      read_every=opts.read_every or read_interval(run.device, log_every),
                      flush_every=(opts.save_every or 0, evaluator.every if evaluator else 0),
                      should_stop=should_stop, reduce_stats=reduce, probe=probe,
                      stop_after_records=(lambda: evaluator.stop_requested) if evaluator is not None else None)
    try:
        with stop_on_signals(stop), (anomaly or nullcontext()):
            for rec in steps:
                last = rec.step
                for current in sinks:
                    current.record(rec)
    except NonFiniteError as e:
        return Outcome("stopped", last, e.model_step, "non-finite value", failed=True), e
    except OutputError as e:  # one output failed: drop it, close the others (the weights are fine)
        current.abort()
        stages.outputs.remove(current)
        return Outcome("stopped", last, last, "output error"), e
    except BaseException as e:
        described = anomaly.nonfinite(e) if anomaly is not None else None
        if described is None:
            for sink in sinks:
                sink.abort()
            raise
        failure = NonFiniteError(f"autograd anomaly at step {last + 1}: {described}", last + 1, last)
        return Outcome("stopped", last, last, "non-finite value (autograd anomaly)", failed=True), failure
    if evaluator is not None and evaluator.stop_requested:
        return Outcome("stopped", last, last, "early stopping"), None
    if should_stop():
        return Outcome("interrupted", last, last, f"signal ({stop.name})"), None
    return Outcome("done", last, last), None


def fit_warning(cfg: Config, validation: Optional[dict], table: Optional[Table]) -> Optional[str]:
    """One warning at the end of a run whose model is no better than a constant: validation R² below 0, or
    accuracy at or below the share of the most frequent class; it names the likely cause and the key."""
    if not validation:
        return None
    spec = cfg.data
    if "r2" in validation and validation["r2"] is not None and validation["r2"] < 0:
        if not spec.standardize_target:
            cause = "the target is not standardized: set data.standardize_target: true"
        elif not spec.standardize:
            cause = "the inputs are not standardized: set data.standardize: true"
        else:
            cause = "too few epochs or an unsuited learning rate: raise train.epochs, or try another optimizer.lr"
        return (f"validation R² is {validation['r2']:.3g}, below 0: the model predicts worse than the target's "
                f"mean; likely cause: {cause}")
    if "accuracy" in validation and table is not None and table.val_y is not None and table.classes is not None:
        import numpy as np

        counts = np.bincount(np.asarray(table.val_y).reshape(-1), minlength=len(table.classes))
        share = float(counts.max() / counts.sum()) if counts.sum() else 0.0
        if validation["accuracy"] <= share:
            cause = ("the inputs are not standardized: set data.standardize: true" if not spec.standardize else
                     "too few epochs or an unsuited learning rate: raise train.epochs, or try another optimizer.lr")
            return (f"validation accuracy {validation['accuracy']:.3g} is no better than always predicting the "
                    f"most frequent class ({share:.3g} of the validation rows); likely cause: {cause}")
    return None


def evaluation_sink(run: Run, opts: TrainOptions) -> Optional[EvaluationSink]:
    """Evaluation on the validation rows (and the training rows), when the run has validation data
    (compare-optimizers evaluates its runs with it too). A ``reduce_on_plateau`` schedule steps on each
    regular evaluation's val_loss (core.components.PlateauSchedule), before ``--save-best`` writes and
    before the step's record reaches ``--save``."""
    from backprop_cli.core.components import PlateauSchedule
    from backprop_cli.runs.evaluation import evaluation_record, measure

    cfg = run.cfg
    val = run.dataset.validation_on(run.device)
    if val is None:
        return None
    table = run.dataset.table
    classes = table.classes if table is not None else None
    y_scaling = table.y_scaling if table is not None else None
    train_x, train_y = run.dataset.on(run.device)
    loss_name = cfg.loss.name

    plateau = run.scheduler if isinstance(run.scheduler, PlateauSchedule) else None

    def measure_now(schedule: bool = True) -> tuple[dict, dict]:
        v = measure(run.model, run.loss_fn, loss_name, *val, classes=classes, y_scaling=y_scaling, detail=True)
        t = measure(run.model, run.loss_fn, loss_name, train_x, train_y, classes=classes, y_scaling=y_scaling)
        detail = {k: v[k] for k in ("classes", "confusion", "per_class") if k in v}
        keys = evaluation_record(v, t, loss_name)
        if plateau is not None and schedule:
            plateau.evaluated(keys["val_loss"], every)
        return keys, detail

    early = cfg.train.early_stopping
    every = cfg.train.eval_every or run.batches.per_epoch
    sink = EvaluationSink(measure_now, every, run.steps,
                          patience=early.patience if early else None,
                          min_delta=early.min_delta if early else 0.0,
                          snapshot=(lambda: _state_of(run)) if early is not None and early.restore_best else None,
                          remeasure=lambda: measure_now(schedule=False))
    if opts.save_best is not None:
        sink.save_best = _best_writer(run, opts.save_best, sink)
    return sink


def _continue_evaluation(evaluator: EvaluationSink, saved: Optional[dict], path: Path) -> None:
    """--resume: the evaluation goes on from the checkpoint's (the best val_loss, its step, early stopping's
    reference and counter), so --save-best is replaced only by a better model and early stopping stops at
    the uninterrupted run's step. A checkpoint whose run had already stopped early leaves nothing to resume."""
    from backprop_cli.errors import CheckpointError

    evaluator.continue_from(saved)
    if evaluator.stop_requested:
        raise CheckpointError(f"{path}: its run had stopped early (val_loss did not improve for {evaluator.waited} "
                              f"evaluations, train.early_stopping.patience {evaluator.patience}): nothing to resume; "
                              f"raise train.early_stopping.patience (e.g. --set train.early_stopping.patience="
                              f"{evaluator.waited + evaluator.patience})")


def _state_of(run: Run) -> tuple[dict, dict, Optional[dict]]:
    """restore_best: a copy of the model's, the optimizer's and the schedule's state, on their device."""
    import copy

    model = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    sched = copy.deepcopy(run.scheduler.state_dict()) if run.scheduler is not None else None
    return model, copy.deepcopy(run.optimizer.state_dict()), sched


def _put_back(run: Run, state: tuple[dict, dict, Optional[dict]]) -> None:
    model, optimizer, sched = state
    run.model.load_state_dict(model)
    run.optimizer.load_state_dict(optimizer)
    if sched is not None:
        run.scheduler.load_state_dict(sched)


def _restore_best(run: Run, evaluator: Optional[EvaluationSink], outcome: Outcome,
                  failure: Optional[BaseException]) -> Outcome:
    """restore_best: at the end of a run that did not fail, the model (and the optimizer and schedule,
    so that --save can be resumed from) go back to the best evaluation; the outcome says at which step."""
    import dataclasses

    if evaluator is None or evaluator.snapshot is None or failure is not None or outcome.failed:
        return outcome
    step = evaluator.restore(lambda state: _put_back(run, state))
    return outcome if step is None else dataclasses.replace(outcome, model_step=step)


def _best_before_resume(evaluator: EvaluationSink, start: int) -> Optional[str]:
    """restore_best after --resume: when the best evaluation is the checkpoint's (at or before the resume), its
    weights are not there to restore (a checkpoint keeps the evaluation's numbers, not a second model): say so."""
    if evaluator.snapshot is None or evaluator.best_state is not None or not 0 < evaluator.best_step <= start:
        return None
    where = ("the checkpoint resumed from holds them" if evaluator.best_step == start
             else "the first run's --save-best file holds them")
    return (f"restore_best: the best evaluation is the checkpoint's (step {evaluator.best_step}, val_loss "
            f"{evaluator.best_loss:.5g}; resumed from step {start}) and no later one was better; the resumed run "
            f"has no copy of its weights, so the model at the end and --save are the last step's ({where})")


def _best_writer(run: Run, path: Path, evaluator: EvaluationSink):
    """``--save-best``: the checkpoint at each new best val_loss, and the line that says so."""
    write = _checkpoint_writer(run, evaluator)

    def save_best(step: int, val_loss: float) -> str:
        write(path, step)
        return f"{path} (step {step}, val_loss {val_loss:.5g})"

    return save_best


def _checkpoint_writer(run: Run, evaluator: Optional[EvaluationSink] = None):
    """Writes the run's checkpoint; with validation data it carries the evaluation's state (the best val_loss,
    its step, early stopping's counter) as of the step saved (the evaluation stage runs before the outputs)."""
    table = run.dataset.table
    # the config's folder too: `evaluate` finds the data paths of the config inside the checkpoint from it
    data = {**table.info(), "base_dir": str(run.cfg.base_dir)} if table is not None else None

    def save(path: Path, step: int) -> None:
        save_checkpoint(path, model=run.model, optimizer=run.optimizer, step=step, config=run.cfg.plain(),
                        scheduler=run.scheduler, device=run.device, data=data,
                        evaluation=evaluator.state() if evaluator is not None else None,
                        best=evaluator.best_state if evaluator is not None and evaluator.snapshot is not None
                        else None)

    return save


def _output_sinks(run: Run, opts: TrainOptions, log_every: int, probe: Diagnostics, reporter: Reporter,
                  evaluator: Optional[EvaluationSink] = None) -> list:
    """The sinks of the outputs asked for on the command line. If one cannot start (a folder that
    cannot be written), those already started are aborted: no temporary file stays."""
    sinks: list = []
    try:
        _add_output_sinks(sinks, run, opts, log_every, probe, reporter, evaluator)
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


def _add_output_sinks(sinks: list, run: Run, opts: TrainOptions, log_every: int, probe: Diagnostics,
                      reporter: Reporter, evaluator: Optional[EvaluationSink] = None) -> None:
    import torch

    if opts.metrics is not None:
        sinks.append(MetricsSink(opts.metrics, run.param_names,
                                 metric_columns(run.cfg, run.dataset.val_samples > 0), probe.columns()))
    if opts.tensorboard is not None:
        sinks.append(TensorBoardSink(opts.tensorboard, run.model, log_every))
    if opts.save is not None:
        save = _checkpoint_writer(run, evaluator)

        def finite() -> bool:
            return all(bool(torch.isfinite(p).all()) for p in run.model.parameters())

        sinks.append(CheckpointSink(opts.save, save, opts.save_every, run.steps, finite))
    if opts.plot is not None:
        sinks.append(PlotSink(opts.plot, reporter.dashboard, title=Path(run.cfg.source).name))


def _start_info(run: Run, opts: TrainOptions, ctx, start: int, changes: list[str],
                evaluator: Optional[EvaluationSink] = None) -> dict:
    info = describe_run(run)
    info["start_step"] = start
    if opts.threads:
        info["threads_why"] = opts.threads
    if evaluator is not None:
        early = run.cfg.train.early_stopping
        info["evaluation"] = {"every": evaluator.every, "per_epoch": run.batches.per_epoch,
                              "early_stopping": early.model_dump() if early else None,
                              "save_best": str(opts.save_best) if opts.save_best else None}
    if opts.detect_anomaly:
        info["detect_anomaly"] = True
    if ctx is not None:
        info["distributed"] = {"world": ctx.world, "backend": ctx.backend}
    if opts.resume is not None:
        info["resume"] = {"path": str(opts.resume), "step": start, "changes": changes,
                          "save": str(opts.save) if opts.save else None}
    return info


@dataclass
class Stages:
    """The sinks a record passes, in this order. The first two complete the record (epoch and epoch_loss;
    the evaluation's val_* and train_*), so every later stage, which only reads it, sees it whole: the
    summary, the console, the warnings (printed through the console), then the outputs asked for."""

    epoch: EpochSink
    evaluation: Optional[EvaluationSink]
    summary: TrackerSink
    console: ReporterSink
    health: HealthSink
    outputs: list[Sink]

    def all(self) -> list[Sink]:
        return [self.epoch, *([self.evaluation] if self.evaluation else []), self.summary, self.console,
                self.health, *self.outputs]


class _StopOrClosed:
    """Stop after this step on Ctrl-C / SIGTERM, or when the reader of the output went away."""

    def __init__(self, stop: StopRequest, shown: ReporterSink):
        self.stop, self.shown = stop, shown

    def __call__(self) -> bool:
        return self.stop() or self.shown.closed


class _Silent:
    """The reporter of ranks other than 0."""

    def start(self, info: dict, log_every: int) -> None:
        pass

    def step(self, record: StepRecord) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def finish(self, summary: Summary, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> None:
        pass

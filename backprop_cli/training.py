"""`backprop train`: config → run → engine, feeding the metrics file, the reporter and the checkpoint.

Nothing here prints; the reporter passed in does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from backprop_cli.build import build_run, describe_run
from backprop_cli.checkpoint import save_checkpoint
from backprop_cli.config import Config, default_log_every
from backprop_cli.engine import StepRecord, Summary, Tracker, train
from backprop_cli.errors import BackpropError, EXIT_INTERRUPTED
from backprop_cli.outputs import MetricsWriter, check_writable


class Reporter(Protocol):
    def start(self, info: dict, log_every: int) -> None: ...
    def step(self, record: StepRecord) -> None: ...
    def finish(self, summary: Summary, outputs: dict[str, str], interrupted: bool) -> None: ...


@dataclass
class TrainOptions:
    metrics: Optional[Path] = None
    save: Optional[Path] = None
    log_every: Optional[int] = None
    zero_grad: bool = True


class Interrupted(BackpropError):
    exit_code = EXIT_INTERRUPTED


def run_training(cfg: Config, opts: TrainOptions, reporter: Reporter) -> Summary:
    if opts.save is not None:
        check_writable(opts.save, what="checkpoint")
    run = build_run(cfg)
    log_every = opts.log_every or cfg.train.log_every or default_log_every(run.steps)
    metrics = MetricsWriter(opts.metrics, run.param_names) if opts.metrics is not None else None
    reporter.start(describe_run(run), log_every)
    tracker = Tracker()
    sync_every = 1 if run.device.type == "cpu" else log_every
    last_step = 0
    interrupted = False
    try:
        for rec in train(run.model, run.loss_fn, run.optimizer, run.batches, run.steps,
                         zero_grad=opts.zero_grad, sync_every=sync_every):
            last_step = rec.step
            tracker.update(rec)
            if metrics is not None:
                metrics.write(rec.as_dict())
            reporter.step(rec)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if metrics is not None:
            metrics.abort()
        raise
    summary = tracker.finish()
    outputs: dict[str, str] = {}
    if metrics is not None:
        metrics.close()
        outputs["metrics"] = str(opts.metrics)
    if opts.save is not None and not interrupted:
        save_checkpoint(opts.save, model=run.model, optimizer=run.optimizer, step=last_step,
                        config=cfg.plain())
        outputs["checkpoint"] = str(opts.save)
    reporter.finish(summary, outputs, interrupted)
    if interrupted:
        raise Interrupted(f"interrupted after step {last_step}")
    return summary

"""`backprop tune`: a hyperparameter search on Optuna. Nothing here prints; the callbacks passed in do.

Optuna does the sampling (TPE, random, grid), the pruning (median, Hyperband), the storage and the
coordination of several processes; this module only says what a trial is:

- a trial's config is ``train``'s config: the file, the command's ``--set`` overrides, then one
  ``--set KEY=VALUE`` per sampled value (:func:`trial_config`, through ``load_config`` as ``train``
  builds it), so that the best trial's ``--set`` line reproduces it;
- it trains with :func:`~backprop_cli.runs.training.run_training`, in this process (start-up is paid
  once per worker), and reports every evaluation's metric to the pruner (a pruned trial stops there);
- its value is the metric of the run's summary (``summary.validation``: the last evaluation);
- a run that diverges (a non-finite loss), or whose sampled config is refused, is a failed trial with
  its reason, and the study goes on; Ctrl-C stops the running trial after its step, records it
  (failed: interrupted) and starts no other.

Optuna is imported inside the functions: ``backprop --help`` and every error exit stay torch- and
Optuna-free.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from backprop_cli.config import Config, load_config
from backprop_cli.config.tune import METRICS
from backprop_cli.errors import EXIT_INTERRUPTED, BackpropError, error_line
from backprop_cli.runs.tune_storage import StorageSpec, open_storage, open_study, quiet_optuna

MAX_WORKERS = 32  # local worker processes of one `tune` (more machines: run tune on each, same --storage)


POLL_S = 0.25  # how often the parent of several workers reads the storage for finished trials


WORKER_SEED_STRIDE = 7919  # worker i's sampler seed: seed + trials already in the study + i × this


class TrialFailed(Exception):
    """A trial that ends without a value (diverged, refused config, interrupted): Optuna records it
    as failed and the study goes on; its reason is the trial's ``reason`` user attribute."""


def value_text(value: Any) -> str:
    """A sampled value as ``--set`` reads it back exactly (floats by repr, strings quoted)."""
    import json

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def param_sets(params: dict) -> list[str]:
    return [f"{key}={value_text(value)}" for key, value in params.items()]


def set_line(params: dict) -> str:
    """``--set optimizer.lr=0.0123 --set model.hidden_size=32``: the trial as train's options."""
    return " ".join(f"--set {shlex.quote(s)}" for s in param_sets(params))


def trial_config(config: Path, sets: list[str], params: dict) -> Config:
    """The config a trial trains: the file, the command's ``--set``s, then the sampled values."""
    return load_config(config, [*sets, *param_sets(params)])


def metric_value(summary, metric: str) -> float:
    """The trial's value: ``metric`` in the run's summary (its last evaluation)."""
    key = METRICS[metric][0]
    validation = summary.validation or {}
    if key == "f1_macro":
        per = (summary.evaluation or {}).get("per_class") or []
        return sum(c["f1"] for c in per) / len(per) if per else math.nan
    return float(validation.get(key, math.nan))


def suggest(trial, space: dict) -> dict:
    """The values of one trial, sampled by Optuna from the space (in the space's order)."""
    params = {}
    for key, p in space.items():
        if p.choices is not None:
            params[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.is_int:
            params[key] = trial.suggest_int(key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[key] = trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)
    return params


class _TrialReporter:
    """The reporter of a trial's run: each evaluation's metric goes to the pruner."""

    def __init__(self, trial, metric: str, prune: bool):
        self.trial, self.key, self.prune = trial, metric, prune
        self.evaluations = 0

    def start(self, info: dict, log_every: int) -> None:
        pass

    def step(self, record) -> None:
        ev = record.evaluation
        if not ev:
            return
        self.evaluations += 1
        value = ev.get(self.key)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), record.step)
        if self.prune and self.trial.should_prune():
            import optuna

            self.trial.set_user_attr("pruned_at", f"evaluation {self.evaluations} (step {record.step})")
            raise optuna.TrialPruned(f"pruned at evaluation {self.evaluations} (step {record.step})")

    def warn(self, text: str) -> None:
        pass

    def finish(self, summary, outputs: dict, status: str, reason: Optional[str] = None) -> None:
        pass


@dataclass
class Job:
    """What every worker of one ``tune`` needs (plain data: it is sent to spawned processes)."""

    config: str
    sets: list[str]
    storage: "StorageSpec"
    study: str
    metric: str
    trials: int  # this worker's share
    timeout: Optional[float] = None
    threads: Optional[int] = None
    sampler_seed: int = 0
    parallel: bool = False  # other workers share the study (TPE's constant liar)


def objective(job: Job, cfg0: Config, stop) -> Callable:
    """Optuna's objective: one trial is train's run of the config with the sampled values."""
    from backprop_cli.config import flops_per_step
    from backprop_cli.core.engine import NonFiniteError
    from backprop_cli.data.load import read_table
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.training import Interrupted, TrainOptions, run_training

    space, prune = cfg0.tune.space, cfg0.tune.pruner != "none"

    def run(trial) -> float:
        params = suggest(trial, space)
        try:
            if stop():
                raise Interrupted(f"interrupted by {stop.name} before the trial started")
            cfg = trial_config(Path(job.config), job.sets, params)
            table = read_table(cfg)
            threads = set_threads(job.threads, flops_per_step(cfg))
            summary = run_training(cfg, TrainOptions(threads=threads), _TrialReporter(trial, job.metric, prune),
                                   table)
        except NonFiniteError as e:
            trial.set_user_attr("reason", f"diverged: {e}")
            raise TrialFailed(str(e)) from None
        except Interrupted as e:
            stop.signal = stop.signal or signal.SIGINT
            trial.set_user_attr("reason", str(e))
            raise TrialFailed(str(e)) from None
        except BackpropError as e:
            text = "; ".join(getattr(e, "problems", None) or [str(e)])
            trial.set_user_attr("reason", text[:500])
            raise TrialFailed(text) from None
        value = metric_value(summary, job.metric)
        if not math.isfinite(value):
            trial.set_user_attr("reason", f"{job.metric} is not a finite number ({value})")
            raise TrialFailed("non-finite metric")
        return value

    return run


def make_sampler(cfg: Config, seed: int, parallel: bool = False):
    import optuna

    tune = cfg.tune
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler({k: p.values() for k, p in tune.space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)


def make_pruner(cfg: Config):
    import optuna

    if cfg.tune.pruner == "median":
        return optuna.pruners.MedianPruner()
    if cfg.tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def work(job: Job, on_trial: Optional[Callable] = None) -> None:
    """Run this worker's trials in this process (``on_trial(frozen_trial)`` after each). Ctrl-C or
    SIGTERM: the running trial stops after its step and is recorded; no other starts."""
    import optuna

    from backprop_cli.io.signals import StopRequest, stop_on_signals

    quiet_optuna()
    stop = StopRequest()

    def after(study, trial) -> None:
        if on_trial is not None:
            on_trial(trial)
        if stop():
            study.stop()

    with stop_on_signals(stop):  # from here a signal stops the search; it never lands inside an import
        # torch loads here, not inside the first trial's time; so does torch._dynamo, which the first
        # optimizer step imports (seconds, measured: the first trial took 4 s, the others 0.4 s)
        import torch._dynamo  # noqa: F401

        import backprop_cli.runs.training  # noqa: F401

        cfg0 = load_config(Path(job.config), job.sets)
        study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage),
                                  sampler=make_sampler(cfg0, job.sampler_seed, job.parallel), pruner=make_pruner(cfg0))
        if not stop():
            study.optimize(objective(job, cfg0, stop), n_trials=job.trials, timeout=job.timeout,
                           catch=(TrialFailed,), callbacks=[after])
    if stop():
        raise SearchInterrupted(stop.name)


class SearchInterrupted(BackpropError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, name: str):
        super().__init__(f"interrupted by {name}: the running trials were recorded; run tune again to go on")


def _worker_main(job: Job) -> None:
    """A spawned worker process: its trials, silently (the parent reads the storage and shows them)."""
    from backprop_cli.io.signals import install

    install()
    try:
        work(job)
    except SearchInterrupted:
        os._exit(EXIT_INTERRUPTED)
    except BackpropError as e:  # a spawned process has no console of its own: its one line, then its code
        sys.stderr.write(error_line(f"[worker] {e}") + "\n")
        sys.stderr.flush()
        os._exit(e.exit_code)
    os._exit(0)


@dataclass
class TuneResult:
    study: Any
    spec: StorageSpec
    metric: str
    direction: str
    new: list = field(default_factory=list)  # this command's trials, in the order they ended
    interrupted: Optional[str] = None


def check_workers(workers: int) -> None:
    if workers < 1 or workers > MAX_WORKERS:
        raise BackpropError(f"--workers {workers}: between 1 and {MAX_WORKERS} worker processes on one machine "
                            f"(more machines: run tune on each with the same --storage and --study)")


def shares(trials: int, workers: int) -> list[int]:
    """Split the trials among the workers: exactly ``trials`` in all, whatever order they finish in."""
    return [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]


def search(cfg: Config, config: Path, sets: list[str], spec: StorageSpec, study_name: str, trials: int,
           workers: int = 1, timeout: Optional[float] = None, threads: Optional[int] = None,
           on_trial: Optional[Callable] = None, on_start: Optional[Callable] = None) -> TuneResult:
    """Run ``trials`` trials of the config's ``tune:`` search in the study; ``on_trial`` sees each one
    as it ends (``on_start(trials already in the study)`` first). One worker runs them here; several are spawned processes that share the storage."""

    metric, direction = cfg.tune.metric, cfg.tune.direction
    study = open_study(spec, study_name, metric, direction)
    existing = len(study.get_trials(deepcopy=False))
    result = TuneResult(study, spec, metric, direction)
    if on_start is not None:
        on_start(existing)

    def seen(trial) -> None:
        result.new.append(trial)
        if on_trial is not None:
            on_trial(trial)

    base = cfg.seed + existing
    jobs = [Job(str(config), list(sets), spec, study_name, metric, n, timeout, threads,
                (base + WORKER_SEED_STRIDE * i) % 2**32, workers > 1)
            for i, n in enumerate(shares(trials, workers)) if n > 0]
    if len(jobs) <= 1:
        try:
            for job in jobs:
                work(job, seen)
        except SearchInterrupted as e:
            result.interrupted = str(e)
        return result
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // len(jobs))
        for job in jobs:
            job.threads = threads
    _run_workers(jobs, study, existing, seen, result)
    return result


def _run_workers(jobs: list[Job], study, existing: int, seen: Callable, result: TuneResult) -> None:
    """Spawn one process per job; show each trial as the storage records its end; Ctrl-C (or SIGTERM)
    asks every worker to stop after its running trial's step (SIGTERM: one request, however many)."""
    import multiprocessing

    import optuna

    from backprop_cli.io.signals import StopRequest, stop_on_signals

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(job,), daemon=False) for job in jobs]
    stop = StopRequest()
    shown: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state in finished}
    asked = False

    def poll() -> None:
        for t in sorted(study.get_trials(deepcopy=False, states=finished), key=lambda t: t.datetime_complete):
            if t.number not in shown:
                shown.add(t.number)
                seen(t)

    with stop_on_signals(stop):
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                if stop() and not asked:
                    asked = True
                    for p in procs:
                        if p.is_alive():
                            os.kill(p.pid, signal.SIGTERM)
                poll()
                time.sleep(POLL_S)
        finally:
            for p in procs:
                p.join()
        poll()
    codes = [p.exitcode for p in procs]
    if stop() or EXIT_INTERRUPTED in codes:
        result.interrupted = (f"interrupted by {stop.name}: the running trials were recorded; run tune again to "
                              "go on")
        return
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        raise BackpropError("; ".join(f"worker {i} exited with code {c}" for i, c in bad)
                            + " (its message is above); the trials it finished are in the study", exit_code=1)


def state_name(trial) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
            "WAITING": "waiting"}.get(trial.state.name, trial.state.name.lower())


def duration_s(trial) -> Optional[float]:
    d = trial.duration
    return d.total_seconds() if d is not None else None


def trial_row(trial) -> dict:
    """One trial as plain data: number, state, value, params, duration_s; and why (pruned or failed)."""
    why = trial.user_attrs.get("pruned_at") if trial.state.name == "PRUNED" else trial.user_attrs.get("reason")
    return {"number": trial.number, "state": state_name(trial), "value": trial.value, "params": dict(trial.params),
            "duration_s": duration_s(trial), "why": why}


def best_trial(study):
    """The best complete trial, or None."""
    try:
        return study.best_trial
    except ValueError:
        return None


def best_config_text(config: Path, sets: list[str], params: dict, out: Path, header: str) -> str:
    """The config of the best trial, resolved (defaults filled in), ``tune:`` removed; data paths are
    rewritten relative to ``out``'s folder, so the file trains from wherever it is written."""
    import yaml

    cfg = trial_config(config, sets, params)
    data = {k: v for k, v in cfg.plain().items() if k != "tune"}
    out_dir = out.resolve().parent
    for key, path in (("path", cfg.data_path() if data["data"].get("kind") == "csv" else None),
                      ("validation", cfg.validation_path())):
        if path is not None:
            data["data"][key] = os.path.relpath(path.resolve(), out_dir)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def write_best_config(text: str, out: Path) -> None:
    from backprop_cli.config import load_text
    from backprop_cli.io.atomic import write_atomic

    load_text(text, out)  # what is written loads as a config (ConfigError otherwise, nothing written)
    write_atomic(out, lambda f: f.write(text))

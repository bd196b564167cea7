"""compare-optimizers: several optimizers from one initialisation, on the same batches.

Each run is the config's own run with another optimizer (and, with several seeds, another seed),
built by :func:`backprop_cli.core.build.build_run` and trained by the engine of ``train``: clipping, the
schedule, precision, the non-finite policy and zero_grad apply exactly as in ``train``.

Held-out data: with ``data.validation`` every run is evaluated as ``train`` evaluates it (the evaluation
sink of runs.training: every ``train.eval_every`` steps, default every epoch, and at its last step), its
``early_stopping`` stops it and ``restore_best`` makes its numbers those of its best evaluation, and the
comparison is ranked by ``val_loss``; without validation data it is ranked by the training loss
(``final_loss``, the last batch's), and says so (:func:`ranking`).

Fairness: every run starts from the same initial weights (the seeded init), reads the same batches in
the same order (the data order depends only on the seed and the step), and uses the same kernel
options (:func:`backprop_cli.core.build.kernel_options`). A run whose loss or gradients go non-finite is
marked diverged at that step; the others go on. Nothing here prints.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from backprop_cli.core.build import build_run, implementation_name, kernel_options, resolve_device
from backprop_cli.config import (SGD, Adam, Config, default_log_every, optimizer_hyperparams, optimizer_label,
                                 optimizer_spec_text, resolved_steps, task_of)
from backprop_cli.data.load import load_dataset
from backprop_cli.data.tables import Table
from backprop_cli.core.engine import NonFiniteError, read_interval, run_steps
from backprop_cli.core.records import StepRecord


def default_optimizers(cfg: Config) -> list:
    """The config's ``compare.optimizers``, else SGD (the config's if it is SGD, else lr 0.01) vs Adam (lr 1e-3)."""
    if cfg.compare is not None:
        return list(cfg.compare.optimizers)
    sgd = cfg.optimizer if cfg.optimizer.name == "sgd" else SGD(name="sgd", lr=0.01)
    return [sgd, Adam(name="adam", lr=1e-3)]


def run_length(cfg: Config, table: Table) -> int:
    """The steps each run of the comparison takes (what :func:`build_run` will resolve), known before any
    run is built: the progress bars show it from the start."""
    return resolved_steps(cfg, math.ceil(len(table.x) / cfg.data.batch_size))


def lower_lr_hint(spec) -> str:
    """``lower its lr (-o "sgd:lr=0.5,momentum=0.9") or clip the gradients (--set train.clip_grad_norm=1)``."""
    return (f'lower its lr (-o "{optimizer_spec_text(spec, lr=spec.lr / 10)}") or clip the gradients '
            "(--set train.clip_grad_norm=1)")


def unique_labels(specs: list) -> list[str]:
    labels, seen = [], {}
    for spec in specs:
        label = optimizer_label(spec)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def variant(cfg: Config, spec, seed: int, steps: Optional[int] = None) -> Config:
    """The config of one run of the comparison: ``cfg`` with this optimizer, seed and (if given) steps."""
    update: dict = {"optimizer": spec, "seed": seed}
    if steps is not None:
        update["train"] = cfg.train.model_copy(update={"steps": steps, "epochs": None})
    return cfg.model_copy(update=update)


@dataclass
class RunResult:
    optimizer: str
    label: str
    hyperparams: dict
    seed: int
    records: list[StepRecord] = field(default_factory=list)
    time_s: float = 0.0
    kernel: dict = field(default_factory=dict)  # the optimizer kernel options every run shares
    implementation: str = ""  # fused, foreach or for-loop (build.implementation_name)
    initial_state: dict = field(default_factory=dict)
    status: str = "done"  # done | diverged
    diverged_at: Optional[int] = None  # the step whose loss or gradients went non-finite
    cause: str = ""  # what went non-finite at that step (the loss, the first parameter)
    diverged_record: Optional[StepRecord] = None  # that step's numbers, as measured
    spec: object = None  # the optimizer's config section
    steps: int = 0  # the steps the run was to take
    # with validation data: each evaluation ({"step", "val_loss", "val_<metric>", "train_loss", ...}), the
    # evaluation sink's summary (the last evaluation's numbers, or the best's with restore_best, and
    # best_loss, best_step), the step early stopping stopped the run at, the task's metric (accuracy or r2)
    evaluations: list[dict] = field(default_factory=list)
    validation: Optional[dict] = None
    stopped_early: Optional[int] = None
    task_metric: Optional[str] = None

    def lower_lr_hint(self) -> str:
        """How to rerun this optimizer with a ten times smaller learning rate (compare's own syntax)."""
        return lower_lr_hint(self.spec) if self.spec is not None else ""

    @property
    def losses(self) -> list[float]:
        return [r.loss for r in self.records]

    @property
    def total_grad_norms(self) -> list[float]:
        return [r.grad_norm for r in self.records]

    def steps_to(self, fraction: float = 0.1) -> Optional[int]:
        """First step whose loss is below ``fraction`` × the first loss (None: never)."""
        if not self.records:
            return None
        target = fraction * self.records[0].loss
        return next((r.step for r in self.records if r.loss < target), None)

    def metrics(self) -> dict:
        losses, norms = self.losses, self.total_grad_norms
        ratios = [r.update_ratio for r in self.records if r.update_ratio is not None]
        return {
            "first_loss": losses[0] if losses else math.nan,
            "final_loss": losses[-1] if losses else math.nan,
            "best_loss": min(losses) if losses else math.nan,
            "steps_to_10pct": self.steps_to(0.1),
            "mean_grad_norm": statistics.fmean(norms) if norms else math.nan,
            "mean_update_ratio": statistics.fmean(ratios) if ratios else math.nan,
            "time_s": self.time_s,
            "steps_per_s": len(losses) / self.time_s if self.time_s > 0 else math.nan,
            **self.val_metrics(),
        }

    def val_metrics(self) -> dict:
        """``val_loss`` (the run's last evaluation, or its best with restore_best), ``best_val_loss`` and
        ``val_<metric>`` (of the same evaluation as val_loss); {} without validation data."""
        v = self.validation
        if self.task_metric is None:
            return {}
        metric = f"val_{self.task_metric}"
        if v is None:
            return {"val_loss": math.nan, "best_val_loss": math.nan, metric: math.nan}
        return {"val_loss": v["loss"], "best_val_loss": v["best_loss"], metric: v.get(self.task_metric, math.nan)}


ProgressFn = Callable[[str, int, int], None]  # label, steps done, total


def compare_optimizers(cfg: Config, specs: list, steps: Optional[int] = None, seeds: int = 1,
                       progress: Optional[ProgressFn] = None, table: Optional[Table] = None) -> list[RunResult]:
    """Run every optimizer for every seed (cfg.seed, cfg.seed+1, ...) on the config's data (``table``,
    when it was read already)."""
    from backprop_cli.runs.training import TrainOptions, evaluation_sink

    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg, table)
    labels = unique_labels(specs)
    kernel = kernel_options(specs, device)
    results = []
    announced = False
    for offset in range(seeds):
        for spec, label in zip(specs, labels):
            run = build_run(variant(cfg, spec, cfg.seed + offset, steps), dataset=dataset, device=device,
                            kernel=kernel)
            if progress is not None and not announced:  # every bar shows its run's length from the start
                for name in labels:
                    progress(name, 0, seeds * run.steps)
                announced = True
            result = RunResult(spec.name, label, optimizer_hyperparams(spec), run.cfg.seed, kernel=kernel,
                               implementation=implementation_name(run.optimizer), spec=spec, steps=run.steps,
                               initial_state={k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()})
            evaluator = evaluation_sink(run, TrainOptions())
            if evaluator is not None:
                result.task_metric = TASK_METRIC[task_of(run.cfg.loss)]
            t0 = time.perf_counter()
            try:
                for rec in run_steps(run.loop(), run.steps, guard=run.guard, measure_updates=True,
                                     read_every=read_interval(device, default_log_every(run.steps)),
                                     flush_every=(evaluator.every,) if evaluator is not None else (),
                                     stop_after_records=(lambda: evaluator.stop_requested) if evaluator else None):
                    if evaluator is not None:
                        evaluator.record(rec)  # val_loss, ... in rec.evaluation at the evaluation steps
                        if rec.evaluation:
                            result.evaluations.append({"step": rec.step, **rec.evaluation})
                    result.records.append(rec)
                    if progress is not None:
                        progress(label, offset * run.steps + rec.step, seeds * run.steps)
            except NonFiniteError as e:
                result.status, result.diverged_at, result.cause = "diverged", e.step, e.cause
                result.diverged_record = e.record
            result.time_s = time.perf_counter() - t0
            if evaluator is not None:
                _finish_evaluation(result, evaluator)
            if progress is not None:
                progress(label, (offset + 1) * run.steps, seeds * run.steps)
            results.append(result)
    return results


# the task metric compare-optimizers shows beside val_loss (higher is better for both)
TASK_METRIC = {"classes": "accuracy", "binary": "accuracy", "regression": "r2"}


def _finish_evaluation(result: RunResult, evaluator) -> None:
    """The run's validation numbers: early stopping's step; with restore_best (a finished run), those of
    its best evaluation (the model itself is not kept: compare-optimizers saves none)."""
    if evaluator.stop_requested and result.records:
        result.stopped_early = result.records[-1].step
    if result.status != "diverged" and evaluator.snapshot is not None:
        evaluator.restore(lambda state: None)
    result.validation = evaluator.summary()


def ranking(results: list[RunResult]) -> dict:
    """What the comparison is ranked by: ``{"ranked_by": "val_loss" | "final_loss", "why": text}``."""
    if any(r.task_metric is not None for r in results):
        return {"ranked_by": "val_loss", "why": "ranked by val_loss on the validation rows"}
    return {"ranked_by": "final_loss",
            "why": "ranked by the training loss (final_loss, the last batch's): the config has no validation "
                   "data; set data.validation (a fraction or a CSV file) to rank by val_loss"}


def write_metrics(path, results: list[RunResult]) -> None:
    """Every run's step records in one .jsonl or .csv file, each with its ``optimizer`` (the label),
    ``seed`` and ``update_ratio`` (and, at evaluation steps, ``val_loss``, ... as in train's). A run that
    diverged ends with one more record: the step that went non-finite, its numbers as measured (non-finite
    ones are null in JSON) and ``"diverged": true``."""
    from backprop_cli.io.metrics import MetricsWriter

    names = next((list(r.records[0].grad_norms) for r in results if r.records), None)
    if names is None:
        names = next((list(r.diverged_record.grad_norms) for r in results if r.diverged_record), [])
    diverged = any(r.status == "diverged" for r in results)
    # with validation data, the evaluation steps' val_* and train_* (CSV: columns, empty on other steps)
    evaluation = next((tuple(k for k in r.evaluations[0] if k != "step") for r in results if r.evaluations), ())
    writer = MetricsWriter(path, names, extra=("optimizer", "seed", "update_ratio") + evaluation
                           + (("diverged",) if diverged else ()))
    try:
        for r in results:
            for rec in r.records:
                writer.write({**rec.as_dict(), "optimizer": r.label, "seed": r.seed})
            if r.diverged_record is not None:
                writer.write({**r.diverged_record.as_dict(), "optimizer": r.label, "seed": r.seed, "diverged": True})
    except BaseException:
        writer.abort()
        raise
    writer.close()


def by_label(results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Runs grouped by optimizer label, in the order the optimizers were given."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.label, []).append(r)
    return groups


def _mean_std(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}


SUMMARY_KEYS = ("first_loss", "final_loss", "best_loss", "steps_to_10pct", "mean_grad_norm",
                "mean_update_ratio", "time_s", "steps_per_s")
LOWER_IS_BETTER = {"first_loss": None, "final_loss": True, "best_loss": True, "steps_to_10pct": True,
                   "mean_grad_norm": None, "mean_update_ratio": None, "time_s": True, "steps_per_s": False}


TIMING = ("time_s", "steps_per_s")  # measured, not computed: they vary from run to run by the machine's noise


def _beyond_spread(stats: list[dict], lower: bool, seeds: int) -> bool:
    """Whether the best timing stands clear of every other beyond the runs' spread: its mean ± std range
    and each other's do not overlap. One seed has no spread to measure: never."""
    if seeds < 2 or len(stats) < 2:
        return False
    ranked = sorted(stats, key=lambda m: m["mean"], reverse=not lower)
    best, rest = ranked[0], ranked[1:]
    if lower:
        return all(best["mean"] + best["std"] < m["mean"] - m["std"] for m in rest)
    return all(best["mean"] - best["std"] > m["mean"] + m["std"] for m in rest)


def val_keys(results: list[RunResult]) -> tuple[str, ...]:
    """The validation columns of a comparison with validation data: val_loss, best_val_loss, val_<metric>."""
    metric = next((r.task_metric for r in results if r.task_metric is not None), None)
    return () if metric is None else ("val_loss", "best_val_loss", f"val_{metric}")


def summarize(results: list[RunResult]) -> list[dict]:
    """One entry per optimizer: each metric's mean and std over the seeds, divergences, and the winners;
    with validation data also val_loss, best_val_loss and the task metric (val_accuracy or val_r2), and which
    runs early stopping stopped (``stopped_early``: [{"seed", "step"}]). ``rank``: 1 for the best mean of the
    ranking key (:func:`ranking`: val_loss, else final_loss), null for an optimizer with a diverged run.
    A diverged run's final loss is its last finite one; winners are chosen among runs that finished."""
    out = []
    extra = val_keys(results)
    lower_is_better = {**LOWER_IS_BETTER, **(dict(zip(extra, (True, True, False))) if extra else {})}
    for label, runs in by_label(results).items():
        metrics = [r.metrics() for r in runs]
        entry = {"label": label, "optimizer": runs[0].optimizer, "hyperparams": runs[0].hyperparams,
                 "implementation": runs[0].implementation, "seeds": [r.seed for r in runs],
                 "diverged": [{"seed": r.seed, "step": r.diverged_at, "cause": r.cause,
                               "last_finite_loss": r.records[-1].loss if r.records else None}
                              for r in runs if r.status == "diverged"]}
        if entry["diverged"]:
            entry["hint"] = runs[0].lower_lr_hint()
        for key in SUMMARY_KEYS + extra:
            entry[key] = _mean_std([m[key] for m in metrics])
        entry["steps_to_10pct"]["reached"] = sum(m["steps_to_10pct"] is not None for m in metrics)
        if extra:
            entry["stopped_early"] = [{"seed": r.seed, "step": r.stopped_early} for r in runs
                                      if r.stopped_early is not None]
            entry["restored_best"] = [{"seed": r.seed, "step": r.validation["restored_best"]} for r in runs
                                      if r.validation and "restored_best" in r.validation]
        out.append(entry)
    key = ranking(results)["ranked_by"]
    ranked = sorted((e for e in out if not e["diverged"] and e[key]["mean"] is not None), key=lambda e: e[key]["mean"])
    for e in out:
        e["rank"] = next((i for i, r in enumerate(ranked, 1) if r is e), None)
    for key, lower in lower_is_better.items():
        if lower is None:
            continue
        scored = [(e[key]["mean"], e["label"]) for e in out if e[key]["mean"] is not None and not e["diverged"]]
        if key in TIMING and not _beyond_spread([e[key] for e in out if e[key]["mean"] is not None
                                                 and not e["diverged"]], lower, len(results) // max(1, len(out))):
            continue  # wall time differs by noise: no winner unless the gap is beyond the runs' spread
        if len(scored) > 1:
            best = (min if lower else max)(scored)[0]
            for e in out:
                e.setdefault("best_in", [])
                if e[key]["mean"] == best and not e["diverged"]:
                    e["best_in"].append(key)
    for e in out:
        e.setdefault("best_in", [])
    return out


def curves(results: list[RunResult]) -> list[dict]:
    """Per optimizer, per step: loss and total grad norm, mean and (several seeds) std over the seeds
    that reached that step; with validation data, per evaluation step (``val_steps``): ``val_loss_mean``
    and ``val_loss_std`` (several seeds; else None), empty lists without; ``ends``: for each seed's run that diverged, its last finite step
    (``step``, ``loss``, ``grad_norm``) and the step that went non-finite (``diverged_at``)."""
    out = []
    for label, runs in by_label(results).items():
        length = max((len(r.records) for r in runs), default=0)
        steps = next((r for r in runs if len(r.records) == length), runs[0]).records
        loss_mean, loss_std, grad_mean, grad_std = [], [], [], []
        for i in range(length):
            losses = [r.records[i].loss for r in runs if i < len(r.records)]
            norms = [r.records[i].grad_norm for r in runs if i < len(r.records)]
            loss_mean.append(statistics.fmean(losses))
            grad_mean.append(statistics.fmean(norms))
            loss_std.append(statistics.pstdev(losses) if len(losses) > 1 else 0.0)
            grad_std.append(statistics.pstdev(norms) if len(norms) > 1 else 0.0)
        several = len(runs) > 1
        val_steps, val_mean, val_std = _val_curve(runs)
        out.append({
            "label": label,
            "steps": [rec.step for rec in steps],
            "loss_mean": loss_mean,
            "loss_std": loss_std if several else None,
            "grad_mean": grad_mean,
            "grad_std": grad_std if several else None,
            "ends": [{"seed": r.seed, "diverged_at": r.diverged_at,
                      "step": r.records[-1].step if r.records else 0,
                      "loss": r.records[-1].loss if r.records else math.nan,
                      "grad_norm": r.records[-1].grad_norm if r.records else math.nan}
                     for r in runs if r.status == "diverged"],
            "val_steps": val_steps,
            "val_loss_mean": val_mean,
            "val_loss_std": val_std if several and val_steps else None,
        })
    return out


def _val_curve(runs: list[RunResult]) -> tuple[list[int], list[float], list[float]]:
    """The evaluations' steps and val_loss, mean and std over the seeds that evaluated at each step."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        for e in r.evaluations:
            by_step.setdefault(e["step"], []).append(e["val_loss"])
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[k]) for k in steps],
            [statistics.pstdev(by_step[k]) if len(by_step[k]) > 1 else 0.0 for k in steps])

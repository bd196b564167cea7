"""compare-optimizers: several optimizers from one initialisation, on the same batches.

Fairness: every run starts from the same initial weights (one state dict, copied), reads the same
batches in the same order (the seeded data order depends only on the seed and the step), and uses the
same implementation flags (:func:`backprop_cli.build.implementation_flags`). Nothing here prints.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from backprop_cli.build import (implementation_flags, implementation_name, make_loss, make_optimizer,
                                resolve_device)
from backprop_cli.config import SGD, Adam, Config, optimizer_hyperparams, optimizer_label, resolved_steps
from backprop_cli.data import Batches, load_dataset
from backprop_cli.engine import StepRecord, train
from backprop_cli.model import build_model


def default_optimizers(cfg: Config) -> list:
    """The config's ``compare.optimizers``, else SGD (the config's if it is SGD, else lr 0.01) vs Adam (lr 1e-3)."""
    if cfg.compare is not None:
        return list(cfg.compare.optimizers)
    sgd = cfg.optimizer if cfg.optimizer.name == "sgd" else SGD(name="sgd", lr=0.01)
    return [sgd, Adam(name="adam", lr=1e-3)]


def unique_labels(specs: list) -> list[str]:
    labels, seen = [], {}
    for spec in specs:
        label = optimizer_label(spec)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


@dataclass
class RunResult:
    optimizer: str
    label: str
    hyperparams: dict
    seed: int
    records: list[StepRecord] = field(default_factory=list)
    time_s: float = 0.0
    flags: dict = field(default_factory=dict)
    implementation: str = ""  # fused, foreach or for-loop (build.implementation_name)
    initial_state: dict = field(default_factory=dict)
    final_state: dict = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [r.loss for r in self.records]

    @property
    def grad_norms(self) -> list[float]:
        return [r.grad_norm for r in self.records]

    def steps_to(self, fraction: float = 0.1) -> Optional[int]:
        """First step whose loss is below ``fraction`` × the first loss (None: never)."""
        if not self.records:
            return None
        target = fraction * self.records[0].loss
        return next((r.step for r in self.records if r.loss < target), None)

    def metrics(self) -> dict:
        losses, norms = self.losses, self.grad_norms
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
        }


ProgressFn = Callable[[str, int, int], None]  # label, steps done, total


def compare_optimizers(cfg: Config, specs: list, steps: Optional[int] = None, seeds: int = 1,
                       progress: Optional[ProgressFn] = None) -> list[RunResult]:
    """Run every optimizer for every seed (cfg.seed, cfg.seed+1, ...). The dataset is the config's."""
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg)
    x, y = dataset.x.to(device), dataset.y.to(device)
    labels = unique_labels(specs)
    flags = implementation_flags(specs, device)
    results = []
    for offset in range(seeds):
        seed = cfg.seed + offset
        initial = build_model(cfg.model, seed).to(device)
        initial_state = copy.deepcopy(initial.state_dict())
        batches = Batches(x, y, cfg.data.batch_size, cfg.data.shuffle, seed)
        total = steps if steps is not None else resolved_steps(cfg, batches.per_epoch)
        for spec, label in zip(specs, labels):
            model = copy.deepcopy(initial)
            model.load_state_dict(initial_state)
            optimizer = make_optimizer(spec, model.parameters(), device, flags)
            result = RunResult(spec.name, label, optimizer_hyperparams(spec), seed, flags=flags,
                               implementation=implementation_name(optimizer), initial_state=initial_state)
            t0 = time.perf_counter()
            for rec in train(model, make_loss(cfg.loss), optimizer, batches, total, measure_updates=True):
                result.records.append(rec)
                if progress is not None:
                    progress(label, offset * total + rec.step, seeds * total)
            result.time_s = time.perf_counter() - t0
            result.final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            results.append(result)
    return results


def _by_label(results: list[RunResult]) -> dict[str, list[RunResult]]:
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


def summarize(results: list[RunResult]) -> list[dict]:
    """One entry per optimizer: each metric's mean and std over the seeds, and the winners."""
    out = []
    for label, runs in _by_label(results).items():
        metrics = [r.metrics() for r in runs]
        entry = {"label": label, "optimizer": runs[0].optimizer, "hyperparams": runs[0].hyperparams,
                 "implementation": runs[0].implementation, "seeds": [r.seed for r in runs]}
        for key in SUMMARY_KEYS:
            entry[key] = _mean_std([m[key] for m in metrics])
        entry["steps_to_10pct"]["reached"] = sum(m["steps_to_10pct"] is not None for m in metrics)
        out.append(entry)
    for key, lower in LOWER_IS_BETTER.items():
        if lower is None:
            continue
        scored = [(e[key]["mean"], e["label"]) for e in out if e[key]["mean"] is not None]
        if len(scored) > 1:
            best = (min if lower else max)(scored)[0]
            for e in out:
                e.setdefault("best_in", [])
                if e[key]["mean"] == best:
                    e["best_in"].append(key)
    for e in out:
        e.setdefault("best_in", [])
    return out


def document(results: list[RunResult], summary: list[dict]) -> dict:
    """The `compare-optimizers --format json` document."""
    def clean(v):
        return v if v is None or (isinstance(v, (int, float)) and math.isfinite(v)) else None

    runs = []
    for r in results:
        m = r.metrics()
        runs.append({"optimizer": r.optimizer, "label": r.label, "hyperparams": r.hyperparams,
                     "implementation": r.implementation, "seed": r.seed,
                     "losses": [clean(v) for v in r.losses], "grad_norms": [clean(v) for v in r.grad_norms],
                     "final_loss": clean(m["final_loss"]), "best_loss": clean(m["best_loss"]),
                     "steps_to_10pct": m["steps_to_10pct"], "mean_update_ratio": clean(m["mean_update_ratio"]),
                     "time_s": m["time_s"]})
    return {"runs": runs, "summary": summary}


def curves(results: list[RunResult]) -> list[dict]:
    """Per optimizer, per step: loss and total grad norm, mean and (several seeds) std over seeds."""
    out = []
    for label, runs in _by_label(results).items():
        losses = torch.tensor([r.losses for r in runs], dtype=torch.float64)
        norms = torch.tensor([r.grad_norms for r in runs], dtype=torch.float64)
        several = len(runs) > 1
        out.append({
            "label": label,
            "steps": [rec.step for rec in runs[0].records],
            "loss_mean": losses.mean(0).tolist(),
            "loss_std": losses.std(0, unbiased=False).tolist() if several else None,
            "grad_mean": norms.mean(0).tolist(),
            "grad_std": norms.std(0, unbiased=False).tolist() if several else None,
        })
    return out

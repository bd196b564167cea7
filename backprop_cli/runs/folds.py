"""`train --folds K`: K-fold cross-validation. Nothing here prints.

The rows of the table (all of them: the folds replace ``data.validation``) are dealt into K folds by a
seeded hash of the row index (the hash of ``data.readers.split_rows``, seeded by ``seed``), class by class
for cross_entropy and one-column bce_with_logits (stratified: each fold holds each class's share, give or
take one row). Fold k trains a fresh model (the config's seed: the same initial weights in every fold)
on the other K − 1 folds and evaluates on fold k; the fill values of missing cells (mean, median,
most_frequent: data.load.FoldEncoder) and, with ``data.standardize``, the scaling statistics are those of
fold k's training rows only (the scaling code of ``data.split``), so no statistic of the held-out rows
leaks into training. The categories of a category column (so the model's inputs) are the whole table's. Early stopping and ``restore_best``, when configured, watch fold k's
held-out rows. Nothing is written: ``--save``, ``--save-best``, ``--metrics``, ``--tensorboard``,
``--plot`` and ``--resume`` are refused with ``--folds`` (which of K models would they keep?).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from backprop_cli.config import Config, task_of
from backprop_cli.data.load import FoldEncoder
from backprop_cli.data.split import _splitmix64, scale
from backprop_cli.data.tables import Table

MIN_FOLDS, MAX_FOLDS = 2, 100


def fold_ids(n: int, k: int, seed: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """The fold (0 … k−1) of each of ``n`` rows: rows in a seeded hash order, dealt round-robin, within
    each stratum when ``strata`` is given (the stratum's rows continue the deal where the previous one
    stopped, so the fold sizes differ by at most one)."""
    with np.errstate(over="ignore"):
        offset = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    order = np.argsort(_splitmix64(np.arange(n, dtype=np.uint64) + offset), kind="stable")
    if strata is not None:
        s = strata[order]
        order = np.concatenate([order[s == c] for c in np.unique(s)]) if n else order
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) % k
    return out


def strata_of(cfg: Config, y: np.ndarray) -> Optional[np.ndarray]:
    """The classes to stratify by (as data.validation's split does), None for regression."""
    if task_of(cfg.loss) == "classes":
        return y
    if task_of(cfg.loss) == "binary" and y.ndim == 2 and y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    return None


def raw_config(cfg: Config) -> Config:
    """The config that reads every row unsplit and unscaled (the folds split and scale)."""
    data = cfg.data.model_copy(update={"validation": None, "standardize": False, "standardize_target": False})
    return cfg.model_copy(update={"data": data})


def fold_table(raw: Table, cfg: Config, train_rows: np.ndarray, held_out: np.ndarray, label: str,
               encoder: Optional[FoldEncoder] = None) -> Table:
    """The table of one fold: the training and held-out rows given by index, the missing cells filled with
    the training rows' statistics (``encoder``: a file's rows encoded again, data.load.FoldEncoder), then
    scaled with the training rows' statistics (data.standardize / standardize_target), as
    ``data.split.scale`` does for a split."""
    y, vy = raw.y[train_rows].copy(), raw.y[held_out].copy()
    if encoder is not None:
        x, vx, encoding = encoder.encode(train_rows, held_out)
    else:
        x, vx, encoding = raw.x[train_rows].copy(), raw.x[held_out].copy(), raw.encoding
    t = dataclasses.replace(raw, x=x, y=y, val_x=vx, val_y=vy, val_source=label, x_scaling=None, y_scaling=None,
                            encoding=encoding,
                            split={"validation": "fold", "rows": int(raw.samples), "validation_rows": int(len(held_out))})
    scale(t, cfg, encoding.scaled() if encoding is not None else None)
    return t


def fold_config(cfg: Config, k: int) -> Config:
    """The config of a fold's run: its held-out rows are its validation data (a share of 1/k)."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"validation": 1.0 / k})})


class _Quiet:
    """The reporter of one fold's run: the folds are reported by their summaries."""

    def start(self, info: dict, log_every: int) -> None:
        pass

    def step(self, record) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def finish(self, summary, outputs, status, reason=None) -> None:
        pass


def cross_validate(cfg: Config, k: int, raw: Table, opts, on_fold=None, encoder: Optional[FoldEncoder] = None) -> dict:
    """Train and evaluate each of the ``k`` folds of ``raw`` (read by data.load.read_fold_table, with its
    ``encoder``: each fold's missing cells are filled with its training rows' statistics; without one, as
    ``raw`` was filled); ``on_fold(index, result)`` after each. Returns
    ``{"folds": [{"fold", "train_rows", "validation_rows", "steps", "status", metrics...}], "mean": {...},
    "std": {...}, "k", "stratified", "seed"}``: mean and (population) std of every validation metric."""
    from backprop_cli.errors import DataError
    from backprop_cli.runs.training import run_training

    n = raw.samples
    if n < k:
        raise DataError(f"{raw.source}: --folds {k} needs at least {k} rows (the table has {n})")
    strata = strata_of(cfg, raw.y)
    ids = fold_ids(n, k, cfg.seed, strata)
    run_cfg = fold_config(cfg, k)
    folds = []
    for i in range(k):
        held_out, train_rows = np.flatnonzero(ids == i), np.flatnonzero(ids != i)
        table = fold_table(raw, cfg, train_rows, held_out, f"fold {i + 1} of {k}: {len(held_out)} of {n} rows",
                           encoder)
        summary = run_training(run_cfg, opts, _Quiet(), table)
        v = dict(summary.validation or {})
        result = {"fold": i + 1, "train_rows": int(len(train_rows)), "validation_rows": int(len(held_out)),
                  "steps": summary.steps, **{key: val for key, val in v.items()}}
        folds.append(result)
        if on_fold is not None:
            on_fold(i, result)
    keys = [key for key in folds[0] if key not in ("fold", "train_rows", "validation_rows", "steps", "best_step",
                                                      "restored_best")]
    mean = {key: _mean([f[key] for f in folds]) for key in keys}
    std = {key: _std([f[key] for f in folds], mean[key]) for key in keys}
    return {"k": k, "seed": cfg.seed, "stratified": strata is not None, "folds": folds, "mean": mean, "std": std}


def _mean(values: list) -> float:
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else math.nan


def _std(values: list, mean: float) -> float:
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return math.sqrt(sum((v - mean) ** 2 for v in kept) / len(kept)) if kept else math.nan


MIN_SEEDS, MAX_SEEDS = 2, 100


def repeat_seeds(cfg: Config, k: int, table: Optional[Table], opts, on_run=None) -> dict:
    """``train --seeds K``: the run of ``cfg`` with seeds ``seed … seed + K − 1`` (the initial weights and the
    batch order), the validation split fixed (``data.split_seed``, default: ``seed``; ``table`` was read with
    it). Returns ``{"split_seed", "runs": [{"seed", "steps", "last_loss", "epoch_loss", validation...}],
    "mean", "std"}``: mean and population std of every validation metric (without validation data: of the
    last complete epoch's loss)."""
    from backprop_cli.runs.training import run_training

    split_seed = cfg.split_seed
    runs = []
    for i in range(k):
        seed = cfg.seed + i
        data = cfg.data.model_copy(update={"split_seed": split_seed})
        run_cfg = cfg.model_copy(update={"seed": seed, "data": data})
        summary = run_training(run_cfg, opts, _Quiet(), table)
        result = {"seed": seed, "steps": summary.steps, "last_loss": summary.last_loss,
                  "epoch_loss": summary.epoch_loss, **dict(summary.validation or {})}
        runs.append(result)
        if on_run is not None:
            on_run(i, result)
    keys = [key for key in runs[0] if key not in ("seed", "steps", "last_loss", "best_step", "restored_best",
                                                     "classes", "confusion", "per_class")]
    if summary.validation:
        keys = [key for key in keys if key != "epoch_loss"]
    mean = {key: _mean([r[key] for r in runs]) for key in keys}
    std = {key: _std([r[key] for r in runs], mean[key]) for key in keys}
    return {"k": k, "split_seed": split_seed, "runs": runs, "mean": mean, "std": std}

"""The validation split (a seeded hash of the row index, stratified by class) and the z-score scaling, whose
statistics come from the training rows only."""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from backprop_cli.config import Config, task_of
from backprop_cli.data.tables import Scaling, Table
from backprop_cli.errors import DataError


def split_rows(n: int, fraction: float, seed: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """The sorted indices of the validation rows: ``round(fraction × rows)`` of each stratum (class), chosen
    by a seeded hash of the row index (splitmix64), so the split depends only on the seed and the data,
    and on no library's random-number generator."""
    with np.errstate(over="ignore"):
        offset = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    order = np.argsort(_splitmix64(np.arange(n, dtype=np.uint64) + offset), kind="stable")
    if strata is None:
        chosen = order[:int(round(fraction * n))]
    else:
        s = strata[order]
        picks = []
        for k in np.unique(s):
            members = order[s == k]
            picks.append(members[:int(round(fraction * len(members)))])
        chosen = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    return np.sort(chosen)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def content_digest(columns: dict, rows: np.ndarray, names: list[str]) -> str:
    """A digest of what the rows ``rows`` of a file hold in the columns ``names`` (the used columns, as read: a
    number column's float32 values, a text column's texts), so that a file edited in place with the same row
    count is told from the one a checkpoint's run read. Vectorised: one pass over each column's bytes."""
    h = hashlib.blake2b(digest_size=8)
    for name in names:
        col = columns[name]
        h.update(name.encode("utf-8", "surrogatepass") + b"\x00")
        if hasattr(col, "codes"):  # a text column: the texts of these rows, not the codes of the whole file's
            codes = col.codes[rows]
            present, local = np.unique(codes, return_inverse=True)
            texts = [col.values[int(c)] if c >= 0 else "" for c in present]
            h.update(b"\x00".join(t.encode("utf-8", "surrogatepass") for t in texts) + b"\x01")
            h.update(np.ascontiguousarray((present >= 0)[local].astype(np.int8)).tobytes())  # missing cells
            h.update(np.ascontiguousarray(local.reshape(-1), dtype=np.int64).tobytes())
        else:
            h.update(np.ascontiguousarray(col[rows], dtype=np.float32).tobytes())
    return h.hexdigest()


def column_stats(a: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each column, in float64, a chunk of rows at a time (no full-size copy)."""
    n = a.shape[0]
    if n == 0:
        return np.zeros(a.shape[1]), np.zeros(a.shape[1])
    shift = a[0].astype(np.float64)
    s = np.zeros(a.shape[1])
    sq = np.zeros(a.shape[1])
    for lo in range(0, n, chunk):
        d = a[lo:lo + chunk].astype(np.float64) - shift
        s += d.sum(axis=0)
        sq += (d * d).sum(axis=0)
    mean = s / n
    var = np.maximum(sq / n - mean * mean, 0.0)
    return mean + shift, np.sqrt(var)


# The statistics scale float32 data and a checkpoint keeps them as float32 holds them (io/checkpoint_checks.py
# refuses others): a std below float32's smallest normal number counts as 0 (the column is constant at
# float32's precision: centred, not divided), mean and std at most float32's largest (rounding in float64).
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [lo, hi) runs of True in a bool vector."""
    d = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def scaling_of(a: np.ndarray, scaled: Optional[np.ndarray] = None) -> tuple[Scaling, np.ndarray]:
    """The training rows' statistics of ``a`` (and each column's raw std). ``scaled``: which columns are
    standardized (the others get mean 0, std 1: a one-hot or indicator input is left as it is). Computed in
    float64; a std below float32's smallest normal number (1.2e-38) counts as a constant column's."""
    if scaled is None:
        mean, std = column_stats(a)
    else:  # only the scaled columns' statistics are computed (an unscaled input's raw std is given as 0)
        mean, std = np.zeros(a.shape[1]), np.zeros(a.shape[1])
        for lo, hi in runs(scaled):  # side-by-side scaled columns as one view: no copy of the others
            mean[lo:hi], std[lo:hi] = column_stats(a[:, lo:hi])
    mean, std = np.clip(mean, -FLOAT32_MAX, FLOAT32_MAX), np.minimum(std, FLOAT32_MAX)
    safe = np.where(std >= FLOAT32_TINY, std, 1.0)
    if scaled is not None:
        mean, safe = np.where(scaled, mean, 0.0), np.where(scaled, safe, 1.0)
    return Scaling([float(v) for v in mean], [float(v) for v in safe]), std


def validation_rows(y: np.ndarray, source: str, cfg: Config,
                    content: Optional[str] = None) -> tuple[Optional[np.ndarray], Optional[dict], Optional[str]]:
    """(a mask of the validation rows, the split as a checkpoint records it, a description) for
    ``data.validation`` as a fraction; (None, None, None) without one. ``content``: the rows' content digest
    (:func:`content_digest`), recorded beside the digest of the held-out indices."""
    spec, loss = cfg.data, cfg.loss.name
    fraction = spec.validation if isinstance(spec.validation, float) else None
    if fraction is None:
        return None, None, None
    n = len(y)
    strata = None
    if task_of(loss) == "classes":
        strata = y
    elif task_of(loss) == "binary" and y.ndim == 2 and y.shape[1] == 1:
        strata = (y[:, 0] > 0.5).astype(np.int64)
    rows = split_rows(n, fraction, cfg.split_seed, strata)
    if len(rows) == 0:
        raise DataError(f"{source}: data.validation: {fraction:g} of {n} rows leaves no validation rows; "
                        "raise the fraction")
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    split = {"validation": fraction, "seed": cfg.split_seed, "rows": n, "validation_rows": int(len(rows)),
             "stratified": strata is not None, "digest": _digest(rows)}
    if content is not None:
        split["content"] = content
    text = f"{len(rows)} of {n} rows of {source} ({fraction:g}, seed {cfg.split_seed}" \
           + (", stratified by class)" if strata is not None else ")")
    return mask, split, text


def scale(table: Table, cfg: Config, scaled: Optional[np.ndarray] = None) -> Table:
    """Standardize (data.standardize, data.standardize_target) with the training rows' statistics, in place."""
    spec = cfg.data
    if table.x.shape[0] == 0:
        raise DataError(f"{table.source}: data.validation leaves no training rows")
    x_scaling, raw_std = scaling_of(table.x, scaled)
    table.raw_std = raw_std
    # a value not finite once scaled is named by its file (a validation file's own, or the data's)
    val_where = table.val_source if (table.split or {}).get("validation") == "file" and table.val_source else \
        table.source
    if spec.standardize:
        for part, where in ((table.x, table.source), (table.val_x, val_where)):
            if part is not None:
                x_scaling.apply(part, table.feature_names, where)
        table.x_scaling = x_scaling
    if spec.standardize_target:
        y_scaling, _ = scaling_of(table.y)
        for part, where in ((table.y, table.source), (table.val_y, val_where)):
            if part is not None:
                y_scaling.apply(part, table.target_names, where)
        table.y_scaling = y_scaling
    return table


def split_and_scale(table: Table, cfg: Config, val_table: Optional[Table] = None) -> Table:
    """Synthetic data (and any table already encoded): hold out the validation rows, then standardize."""
    if val_table is not None:
        table.val_x, table.val_y = val_table.x, val_table.y
        table.split = {"validation": "file", "path": val_table.source, "rows": int(val_table.samples)}
        table.val_source = val_table.source
    else:
        mask, split, text = validation_rows(table.y, table.source, cfg)
        if mask is not None:
            table.val_x, table.val_y = table.x[mask], table.y[mask]
            table.x, table.y = table.x[~mask], table.y[~mask]
            table.split, table.val_source = split, text
    return scale(table, cfg)

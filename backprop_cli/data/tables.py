"""The data as read (:class:`Table`, numpy, no torch) and as tensors (:class:`Dataset`), and the z-score
:class:`Scaling` both carry. Nothing here reads a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

SCALE_CHUNK = 1 << 16  # rows scaled at a time (one chunk-sized temporary, never a copy of the whole table)


def display_path(path: Path) -> str:
    """The path as the user would write it: relative to the current folder when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


@dataclass
class Scaling:
    """z = (v − mean) / std per column, with the training rows' statistics (std 1 where a column is constant:
    it is centred, not divided; mean 0 and std 1 for a column that is not scaled, such as a one-hot one)."""

    mean: list[float]
    std: list[float]

    def apply(self, a: np.ndarray, names: Optional[list[str]] = None, where: str = "") -> None:
        """Scale ``a`` (rows, columns) in place. A column of mean 0 and std 1 (one-hot, indicator) is not
        touched (v − 0 and v / 1 are v), so a wide one-hot table costs only its scaled columns. The others are
        computed in float64, a chunk of rows at a time, then stored in ``a``'s dtype: the mean is not rounded to
        float32 first (a column near 1000 with a std of 1e-4 would lose a third of a unit), and float32 data of
        ±3.4e38 scale to finite values (``v − mean`` alone would overflow float32). A value not finite in
        ``a``'s dtype once scaled (3e38 under a std of 0.001) is a DataError naming the file (``where``) and the
        column (``names``)."""
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, dtype=np.float64)
        d = np.diff(np.concatenate([[0], ((mean != 0) | (std != 1)).astype(np.int8), [0]]))
        rows = a.reshape(a.shape[0], -1)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for c0, c1 in zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()):
                for lo in range(0, rows.shape[0], SCALE_CHUNK):
                    part = rows[lo:lo + SCALE_CHUNK, c0:c1]
                    scaled = ((part.astype(np.float64) - mean[c0:c1]) / std[c0:c1]).astype(a.dtype)
                    bad = np.argwhere(~np.isfinite(scaled))
                    if len(bad):
                        raise self._not_finite(rows, lo, bad[0] + [0, c0], mean, std, names, where)
                    part[...] = scaled

    @staticmethod
    def _not_finite(a: np.ndarray, lo: int, at: np.ndarray, mean: np.ndarray, std: np.ndarray,
                    names: Optional[list[str]], where: str) -> Exception:
        from backprop_cli.errors import DataError

        row, col = int(lo + at[0]), int(at[1])
        name = repr(names[col]) if names is not None and col < len(names) else f"{col + 1}"
        value = float(a[row, col])
        return DataError(f"{where + ': ' if where else ''}column {name}: a value is not finite in {a.dtype} once "
                         f"scaled (got {value:.9g}, mean {float(mean[col]):.9g}, std {float(std[col]):.9g})")

    def plain(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_plain(d: Optional[dict]) -> Optional["Scaling"]:
        return None if d is None else Scaling([float(v) for v in d["mean"]], [float(v) for v in d["std"]])


class _Rows:
    """Row counts of a table or a dataset: its training rows ``x`` and held-out rows ``val_x``."""

    @property
    def samples(self) -> int:
        return self.x.shape[0]

    @property
    def val_samples(self) -> int:
        return 0 if self.val_x is None else self.val_x.shape[0]


@dataclass
class Table(_Rows):
    """Data as read, before torch: ``x`` (rows, inputs) float32, the encoded inputs; ``y`` (rows, outputs)
    float32, or (rows,) int64 class indices for cross_entropy. ``x``/``y`` are the training rows and
    ``val_x``/``val_y`` the validation rows (None without validation), both already scaled when standardizing.
    ``feature_names`` names the columns of ``x`` (``island=Biscoe`` for a one-hot column); ``columns`` the
    file's input columns they come from; ``encoding`` how (None for synthetic data)."""

    x: np.ndarray
    y: np.ndarray
    source: str
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    classes: Optional[list[str]] = None  # cross_entropy: the class names, index = class
    val_x: Optional[np.ndarray] = None
    val_y: Optional[np.ndarray] = None
    val_source: Optional[str] = None
    x_scaling: Optional[Scaling] = None  # applied to x and val_x (data.standardize)
    y_scaling: Optional[Scaling] = None  # applied to y and val_y (data.standardize_target)
    raw_std: Optional[np.ndarray] = None  # each input's std over the training rows, before any scaling
    split: Optional[dict] = None  # how the validation rows were chosen (recorded in checkpoints)
    dropped: int = 0  # rows dropped for missing cells (data.missing: drop_rows, or a missing target)
    columns: Optional[list[str]] = None  # the file's input columns (None: feature_names)
    encoding: Any = None  # data.encoding.Encoding: types, categories and fill values, fitted on the training rows
    dropped_target: int = 0  # of ``dropped``: rows whose target cell was missing

    def info(self) -> dict:
        """What a checkpoint keeps so that evaluate and predict read new data as training did (plain data)."""
        out = {"features": list(self.columns if self.columns is not None else self.feature_names),
               "targets": list(self.target_names),
               "classes": None if self.classes is None else list(self.classes),
               "x_scaling": None if self.x_scaling is None else self.x_scaling.plain(),
               "y_scaling": None if self.y_scaling is None else self.y_scaling.plain(),
               "split": None if self.split is None else dict(self.split)}
        if self.encoding is not None:
            out["encoding"] = self.encoding.plain()
        return out


@dataclass
class Dataset(_Rows):
    """The data as tensors on the CPU; :meth:`on` gives (and keeps) a copy on a device."""

    x: Any  # torch.Tensor (samples, features), float32
    y: Any  # torch.Tensor (samples, outputs) float32, or (samples,) int64 class labels
    source: str
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    val_x: Any = None
    val_y: Any = None
    table: Optional[Table] = None
    _on: dict = field(default_factory=dict, repr=False)

    def on(self, device) -> tuple:
        """(x, y) on ``device``, copied there once."""
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.x.to(device), self.y.to(device))
        return self._on[key]

    def validation_on(self, device) -> Optional[tuple]:
        """(val_x, val_y) on ``device`` (None without validation data)."""
        if self.val_x is None:
            return None
        key = f"val:{device}"
        if key not in self._on:
            self._on[key] = (self.val_x.to(device), self.val_y.to(device))
        return self._on[key]

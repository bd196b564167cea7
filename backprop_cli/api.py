"""A trained model in Python, scikit-learn style::

    import backprop_cli as bp
    m = bp.load("best.pt")            # a checkpoint, or a safetensors file of `backprop export`
    m.predict("new.csv")              # class names, 0/1 per target, or values in the target's units
    m.predict_proba({"x1": [0.5], "island": ["Biscoe"], ...})
    m.evaluate("test.csv")            # the document of `backprop evaluate --format json`

``data`` is a path (CSV, TSV, Parquet, .gz: as ``predict`` reads it), a pandas DataFrame, a pyarrow Table or
a dict of columns. A table or dict goes through the reader of a Parquet file's columns and predict's own
encoding, so every number equals the CLI's. Torch is imported by :func:`load`, not by ``import backprop_cli``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from backprop_cli.config import task_of
from backprop_cli.errors import DataError


def load(path: str | os.PathLike) -> "Model":
    """The model of a checkpoint (``train --save``/``--save-best``) or of an exported safetensors file, with
    every check of the checkpoint loader (a bad file raises backprop_cli.errors.CheckpointError)."""
    from backprop_cli.runs.prediction import load_trained

    return Model(load_trained(Path(path)))


class Model:
    """A loaded model: :meth:`predict`, :meth:`predict_proba`, :meth:`evaluate`, ``classes_`` (class names, or
    None for regression), ``feature_names_in_`` (the input columns, in order), ``targets_``, ``task_``."""

    def __init__(self, trained):
        self.trained = trained
        self.task_ = task_of(trained.loss_name)
        self.classes_ = None if trained.classes is None else np.array(trained.classes, dtype=object)
        self.feature_names_in_ = np.array(trained.features, dtype=object)
        self.targets_ = list(trained.targets)

    def __repr__(self) -> str:
        return (f"Model({self.trained.path}, task={self.task_}, features={len(self.feature_names_in_)}, "
                f"step={self.trained.step})")

    def _table(self, data: Any) -> tuple[list[str], np.ndarray]:
        from backprop_cli.runs.prediction import predict

        path, table = _source(data)
        return predict(self.trained, path, table=table)

    def predict(self, data: Any) -> np.ndarray:
        """Classes: the class name of each row [N]; binary targets: 0/1 [N] (one target) or [N, T];
        regression: values in the target's units [N] (one target) or [N, T]."""
        header, rows = self._table(data)
        if self.task_ == "classes":
            return np.array([r[0] for r in rows], dtype=object)
        t = len(self.targets_)
        out = np.array([r[:t] for r in rows], dtype=np.int64 if self.task_ == "binary" else np.float64)
        return out[:, 0] if t == 1 else out

    def predict_proba(self, data: Any) -> np.ndarray:
        """Classes: [N, K] in the order of ``classes_``; binary targets: each target's probability of 1, [N, T]."""
        if self.task_ == "regression":
            raise AttributeError("predict_proba: a regression model has no probabilities; use predict")
        header, rows = self._table(data)
        first = 1 if self.task_ == "classes" else len(self.targets_)
        return np.array([r[first:] for r in rows], dtype=np.float64)

    def evaluate(self, data: Any) -> dict:
        """Loss and metrics on ``data`` (it holds the target columns), as ``backprop evaluate --format json``."""
        from backprop_cli.runs.prediction import evaluate

        path, table = _source(data)
        return evaluate(self.trained, path, table=table)


def _source(data: Any) -> tuple[Path, Any]:
    """(the path, None) for a path; ("data", a pyarrow Table) for a pandas DataFrame, pyarrow Table or dict of
    columns, read as predict reads a Parquet file's columns."""
    if isinstance(data, (str, os.PathLike)):
        return Path(data), None
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return Path("data"), data
    try:
        if isinstance(data, dict):
            return Path("data"), pa.table({str(k): _column(v) for k, v in data.items()})
        if hasattr(data, "columns") and hasattr(data, "iloc"):  # a pandas DataFrame
            return Path("data"), pa.Table.from_pandas(data, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"data: the columns do not make a table ({str(e).splitlines()[0][:120]})") from None
    raise DataError(f"data: expected a path, a pandas DataFrame, a pyarrow Table or a dict of columns "
                    f"(got {type(data).__name__})")


def _column(values: Any):
    """A dict's column as pyarrow takes it: a list, tuple or 1-d array (a scalar is one row); in a column of
    texts, None and NaN are empty cells (pandas' ``tolist()`` gives NaN for them)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.reshape(-1)
    cells = values.reshape(-1).tolist() if isinstance(values, np.ndarray) else (
        list(values) if isinstance(values, (list, tuple)) else [values])
    if any(isinstance(v, str) for v in cells):
        cells = [None if v is None or (isinstance(v, float) and v != v) else v for v in cells]
    return cells

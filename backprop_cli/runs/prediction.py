"""`evaluate` and `predict`: a trained model from its checkpoint, applied to a CSV with the checkpoint's own
columns, scaling and class names. Nothing here prints.

A checkpoint written since validation and scaling exist carries ``data`` (see checkpoint.save_checkpoint):
the feature and target columns, the class names, the scaling statistics and the split. An older one has
none: its features and targets come from its config, no scaling, classes named 0 … K−1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from backprop_cli.core.build import make_loss
from backprop_cli.io.checkpoint import load_checkpoint, load_weights
from backprop_cli.io.safetensors_file import is_safetensors, load_safetensors
from backprop_cli.config import Config, CsvData, task_of, validate
from backprop_cli.data.columns import rows_to_drop
from backprop_cli.data.encoding import ColumnCode, Encoding
from backprop_cli.data.load import read_table, targets_of
from backprop_cli.data.readers import read_raw, source_of
from backprop_cli.data.tables import Scaling
from backprop_cli.errors import CheckpointError, ConfigError, DataError
from backprop_cli.runs.evaluation import measure, outputs
from backprop_cli.core.model import Net, build_model


@dataclass
class Trained:
    """A model as its checkpoint left it, and how it reads data."""

    path: Path
    step: int
    cfg: Config
    model: Net
    features: list[str]
    targets: list[str]
    classes: Optional[list[str]]
    x_scaling: Optional[Scaling]
    y_scaling: Optional[Scaling]
    split: Optional[dict]
    encoding: Optional[Encoding] = None
    saved: Optional[dict] = None  # the file's own step, config and data sections, as stored (export writes them)

    @property
    def loss_name(self) -> str:
        return self.cfg.loss.name


def load_trained(path: Path, cfg: Optional[Config] = None) -> Trained:
    """The checkpoint's model (weights loaded, eval mode); a safetensors file of ``backprop export`` is taken as
    a checkpoint without optimizer and RNG state. ``cfg``: a config to use instead of the
    checkpoint's own (``evaluate --config``: its data section; the model must be the checkpoint's)."""
    state = load_safetensors(path) if is_safetensors(path) else load_checkpoint(path)  # backprop export's file
    data = state.get("data") or {}
    if cfg is None:
        base = data.get("base_dir")
        try:
            cfg = validate(dict(state["config"]), source=f"{path} (its config)",
                           base_dir=Path(base) if isinstance(base, str) else None)
        except ConfigError as e:
            raise CheckpointError(f"{path}: the config inside the checkpoint is not valid: {e.problems[0]}") from None
    features = data.get("features")
    targets = data.get("targets")
    if features is None:
        if isinstance(cfg.data, CsvData) and cfg.data.features is not None:
            features = list(cfg.data.features)
        else:
            raise CheckpointError(f"{path}: the checkpoint does not name its feature columns (it was written "
                                  "before checkpoints kept them, without data.features): give --config with "
                                  "data.features")
    if targets is None:
        targets = cfg.data.target_columns if isinstance(cfg.data, CsvData) else [f"y{i}" for i in
                                                                                 range(cfg.model.output_size)]
    classes = data.get("classes")
    if classes is None and task_of(cfg.loss) == "classes":
        classes = [str(k) for k in range(cfg.model.output_size)]
    if data.get("encoding") is not None:
        try:
            encoding = Encoding.from_plain(data["encoding"], str(path))
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        if [c.name for c in encoding.columns] != list(features):
            raise CheckpointError(f"{path}: data.encoding does not code the columns data.features names")
    else:  # written before column types: every feature a number, no missing cells
        encoding = Encoding([ColumnCode(name, "number", "error") for name in features])
    xs = data.get("x_scaling")
    if xs is not None and len(xs["mean"]) != encoding.width:
        raise CheckpointError(f"{path}: data.x_scaling has {len(xs['mean'])} columns, data.encoding {encoding.width}")
    if encoding.width != cfg.model.input_size:
        raise CheckpointError(f"{path}: data.features gives {encoding.width} inputs but the model takes "
                              f"{cfg.model.input_size}")
    model = build_model(cfg.model, cfg.seed, encoding.embeddings())
    load_weights(model, state, path)
    model.eval()
    if classes is not None and len(classes) != cfg.model.output_size:
        raise CheckpointError(f"{path}: data.classes names {len(classes)} classes but the model has "
                              f"{cfg.model.output_size} outputs")
    return Trained(Path(path), int(state["step"]), cfg, model, list(features), list(targets), classes,
                   Scaling.from_plain(data.get("x_scaling")), Scaling.from_plain(data.get("y_scaling")),
                   data.get("split"), encoding,
                   {"step": state["step"], "config": state["config"], "data": state.get("data")})


def read_rows(trained: Trained, path: Path, *, targets: bool, keep: Optional[str] = None,
              key: str = "--data", table=None) -> tuple[np.ndarray, Optional[np.ndarray], Optional[list[str]], str]:
    """(x encoded and scaled as in training, y (scaled targets or class indices) or None, the kept column, source)
    of a file (CSV, TSV, Parquet, .gz text: as training read its data) with the checkpoint's columns. Missing
    cells are filled by the columns' policies; with ``targets`` (evaluate) a row without a target, or with a
    missing cell in a ``drop_rows`` column, is left out. ``table``: a pyarrow Table to read instead of the file,
    as a Parquet file's columns are read (``path`` then only names it in messages)."""
    spec = trained.cfg.data
    delimiter, decimal = (spec.delimiter, spec.decimal) if isinstance(spec, CsvData) else (None, ".")
    src = source_of(path, key, None, ".")
    if src.format == "text" and delimiter is not None and not str(path).lower().removesuffix(".gz").endswith(
            (".tsv", ".tab")):
        src = source_of(path, key, delimiter, decimal)
    enc = trained.encoding
    labels = task_of(trained.loss_name) == "classes"
    names = list(trained.targets) if targets else []
    numbers = enc.number_columns() + ([] if labels else names)
    texts = enc.text_columns() + (names if labels else [])
    if table is None:
        raw = read_raw(src, numbers=numbers, texts=texts, keep=keep)
    else:
        raw = _in_memory(table, Path(path), key, numbers, texts, keep)
    if raw.rows == 0:
        raise DataError(f"{src.where}: no data rows after the header")
    kept_rows, _ = rows_to_drop(enc, raw, names, "evaluate" if targets else "predict")
    rows = np.flatnonzero(kept_rows)
    if len(rows) == 0:
        raise DataError(f"{src.where}: no rows left to evaluate (every row lacks a target or has a missing cell in "
                        "a drop_rows column)")
    x = enc.transform(raw, rows, "predict")
    if trained.x_scaling is not None:
        trained.x_scaling.apply(x, enc.names(), src.where)
    y = None
    if targets:
        y, _ = targets_of(raw, rows, names, trained.loss_name, trained.classes if labels else None)
        if not labels and trained.y_scaling is not None:
            trained.y_scaling.apply(y, names, src.where)
    kept = [raw.kept[i] for i in rows] if keep is not None else None
    dropped = raw.rows - len(rows)
    where = src.where + (f" ({dropped} rows without a target or with a drop_rows cell missing, left out)"
                         if dropped else "")
    return x, y, kept, where


def _in_memory(table, path: Path, key: str, numbers: list[str], texts: list[str], keep: Optional[str]):
    from backprop_cli.data.parquet import arrow_columns
    from backprop_cli.data.readers import Source, missing_column

    src = Source(path, key, format="parquet", where=str(path))
    header = list(table.column_names)
    for name in [*numbers, *texts, *([keep] if keep else [])]:
        if name not in header:
            raise missing_column(src, key, name, header)
    return arrow_columns(table, src, header, numbers, texts, [], keep)


def own_validation(trained: Trained) -> tuple[np.ndarray, np.ndarray, str]:
    """The checkpoint's own validation rows: its config's data.validation (a file, or the same share of the
    training file, split as in training), scaled with the checkpoint's statistics."""
    cfg = trained.cfg
    validation = getattr(cfg.data, "validation", None)
    if validation is None:
        raise DataError(f"{trained.path}: its run had no validation data; give --data CSV")
    raw = cfg.model_copy(update={"data": cfg.data.model_copy(update={"standardize": False,
                                                                       "standardize_target": False})})
    raw._base_dir, raw._source = cfg.base_dir, cfg.source
    table = read_table(raw, trained.encoding if (trained.cfg.data.kind == "csv") else None)
    saved = trained.split or {}
    if saved.get("digest") is not None and (table.split or {}).get("digest") != saved["digest"]:
        raise DataError(f"{table.source}: the data no longer gives the validation rows the checkpoint's run held "
                        "out (the file changed); give --data CSV")
    x, y = table.val_x, table.val_y
    where = table.val_source if (table.split or {}).get("validation") == "file" else table.source
    if trained.x_scaling is not None:
        trained.x_scaling.apply(x, trained.encoding.names(), where)
    if trained.y_scaling is not None:
        trained.y_scaling.apply(y, list(trained.targets), where)
    return x, y, table.val_source or table.source


def training_rows_among(trained: Trained, x: np.ndarray) -> Optional[int]:
    """How many of these rows (scaled as in training) are rows the checkpoint's run trained on: its config's
    CSV read again, split as in training (the saved validation digest must still match), its training rows'
    features compared value for value. None when that cannot be told (no CSV, the file gone or changed)."""
    cfg = trained.cfg
    if not isinstance(cfg.data, CsvData):
        return None
    raw = cfg.model_copy(update={"data": cfg.data.model_copy(update={"standardize": False,
                                                                       "standardize_target": False})})
    raw._base_dir, raw._source = cfg.base_dir, cfg.source
    try:
        table = read_table(raw)
    except (DataError, OSError):
        return None
    saved = (trained.split or {}).get("digest")
    if saved is not None and (table.split or {}).get("digest") != saved:
        return None
    seen = np.ascontiguousarray(np.array(table.x, dtype=x.dtype, copy=True))
    if trained.x_scaling is not None:
        try:
            trained.x_scaling.apply(seen, trained.encoding.names(), table.source)
        except DataError:  # a training row that no longer scales: not one of these rows
            return None
    if seen.shape[1] != x.shape[1]:
        return None
    known = {row.tobytes() for row in seen}
    return int(sum(row.tobytes() in known for row in np.ascontiguousarray(x)))


def evaluate(trained: Trained, data: Optional[Path] = None, table=None) -> dict:
    """Loss and metrics on a CSV (default: the checkpoint's own validation rows), as ``train`` computes them.
    With ``data``, ``training_rows`` says how many of its rows the checkpoint's run trained on."""
    seen = None
    if data is not None:
        x, y, _, source = read_rows(trained, data, targets=True, table=table)
        seen = training_rows_among(trained, x)
    else:
        x, y, source = own_validation(trained)
    loss_fn = make_loss(trained.cfg.loss)
    result = measure(trained.model, loss_fn, trained.loss_name, torch.from_numpy(x), torch.from_numpy(y),
                     classes=trained.classes, y_scaling=trained.y_scaling, detail=True)
    return {"checkpoint": str(trained.path), "step": trained.step, "data": source, "rows": int(x.shape[0]),
            **({"training_rows": seen} if seen is not None else {}), **result}


def predict(trained: Trained, data: Path, keep: Optional[str] = None, table=None) -> tuple[list[str], list[list]]:
    """One prediction per row of ``data``, in order: (column names, rows). Regression: one column per target,
    in the original units; cross_entropy: ``prediction`` (the class name) and ``p_<class>``; bce_with_logits:
    each target column's 0/1 prediction and ``p_<target>``. ``keep``: a column of the input passed through
    first (an id)."""
    x, _, kept, _ = read_rows(trained, data, targets=False, keep=keep, table=table)
    out = outputs(trained.model, torch.from_numpy(x)).float()
    task = task_of(trained.loss_name)
    if task == "classes":
        probs = torch.softmax(out, dim=1).numpy()
        best = probs.argmax(axis=1)
        header = ["prediction"] + [f"p_{c}" for c in trained.classes]
        rows = [[trained.classes[k], *p.tolist()] for k, p in zip(best, probs)]
    elif task == "binary":
        probs = torch.sigmoid(out).numpy()
        header = [*trained.targets, *(f"p_{t}" for t in trained.targets)]
        rows = [[*(int(v > 0.5) for v in p), *p.tolist()] for p in probs]
    else:
        values = out.numpy().astype(np.float64)
        if trained.y_scaling is not None:
            values = values * np.asarray(trained.y_scaling.std) + np.asarray(trained.y_scaling.mean)
        header = list(trained.targets)
        rows = [r.tolist() for r in values]
    if keep is not None:
        header = [keep, *header]
        rows = [[k, *r] for k, r in zip(kept, rows)]
    return header, rows

"""`evaluate` and `predict`: a trained model from its checkpoint, applied to a CSV with the checkpoint's own
columns, scaling and class names. Nothing here prints.

A checkpoint written since validation and scaling exist carries ``data`` (see checkpoint.save_checkpoint):
the feature and target columns, the class names, the scaling statistics and the split. An older one has
none: its features and targets come from its config, no scaling, classes named 0 … K−1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

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
from backprop_cli.limits import MAX_CLASSES
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
    config_given: bool = False  # cfg is the user's (evaluate --config), not the checkpoint's own

    @property
    def loss_name(self) -> str:
        return self.cfg.loss.name


def load_trained(path: Path, cfg: Optional[Config] = None, overrides: Optional[list[str]] = None) -> Trained:
    """The checkpoint's model (weights loaded, eval mode); a safetensors file of ``backprop export`` is taken as
    a checkpoint without optimizer and RNG state. ``cfg``: a config to use instead of the
    checkpoint's own (``evaluate --config``: its data section; the model must be the checkpoint's);
    ``overrides``: ``--set`` on the checkpoint's own config (``evaluate --set`` without ``--config``). The
    config's missing-cell policies ``drop_rows`` and ``error`` apply to the checkpoint's columns (they need no
    fitted value); a fill the model was not trained with is one line."""
    state = load_safetensors(path) if is_safetensors(path) else load_checkpoint(path)  # backprop export's file
    data = state.get("data") or {}
    base = data.get("base_dir")
    if isinstance(base, str) and "\x00" in base:  # a crafted checkpoint: open() would raise ValueError
        raise CheckpointError(f"{path}: data.base_dir: a folder name cannot hold a NUL byte (got {base!r})")
    given = cfg is not None
    if cfg is None:
        try:
            cfg = validate(dict(state["config"]), source=f"{path} (its config)",
                           base_dir=Path(base) if isinstance(base, str) else None, overrides=overrides)
        except ConfigError as e:
            if overrides:
                raise
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
    named = "data.targets" if targets is not None else "the config's data.target"
    if targets is None:
        targets = cfg.data.target_columns if isinstance(cfg.data, CsvData) else [f"y{i}" for i in
                                                                                 range(cfg.model.output_size)]
    classes = data.get("classes")
    task = task_of(cfg.loss)
    if task == "classes" and max(cfg.model.output_size, len(classes or ())) > MAX_CLASSES:
        raise CheckpointError(f"{path}: {max(cfg.model.output_size, len(classes or ())):,} classes, more than the "
                              f"{MAX_CLASSES:,} a classification may have")
    want = 1 if task == "classes" else cfg.model.output_size
    if len(targets) != want:  # a crafted or mismatched data.targets: the metrics would broadcast, predict invent
        raise CheckpointError(f"{path}: {named} names {len(targets)} column{'s' * (len(targets) != 1)} ("
                              f"{', '.join(map(repr, targets[:4]))}{', …' if len(targets) > 4 else ''}) but the "
                              f"model's {cfg.loss.name} takes " + ("1 label column" if task == "classes" else
                                                                   f"{want} target column{'s' * (want != 1)}"))
    if classes is None and task == "classes":
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
    encoding = with_config_policies(encoding, cfg, given or bool(overrides))
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
                   {"step": state["step"], "config": state["config"], "data": state.get("data")}, given)


def with_config_policies(enc: Encoding, cfg: Config, given: bool) -> Encoding:
    """The checkpoint's column codes with the config's missing policies where they apply to any model:
    ``drop_rows`` and ``error`` (a checkpoint written before column types records every column as ``error``).
    ``given`` (the user's --config or --set): a fill policy other than the model's is a ConfigError."""
    import dataclasses

    spec = cfg.data
    if not isinstance(spec, CsvData):
        return enc
    out = []
    for code in enc.columns:
        own = (spec.columns or {}).get(code.name)
        asked = (own.missing if own is not None else None) or spec.missing
        key = f"data.columns.{code.name}.missing" if own is not None and own.missing else "data.missing"
        if asked in ("drop_rows", "error"):
            code = dataclasses.replace(code, missing=asked)
        elif given and asked != "auto" and asked != code.missing and not (
                code.type != "number" and asked in ("mean", "median")):
            raise ConfigError(f"{key}: {asked} for column {code.name!r}: the model was trained with missing: "
                              f"{code.missing} and holds no {asked} fill for it; evaluate fills a cell only as the "
                              "model learnt, or leaves the row out (drop_rows) or refuses it (error)")
        out.append(code)
    return Encoding(out)


def _source(trained: Trained, path: Path, key: str):
    spec = trained.cfg.data
    delimiter, decimal = (spec.delimiter, spec.decimal) if isinstance(spec, CsvData) else (None, ".")
    src = source_of(path, key, None, ".")
    if src.format == "text" and delimiter is not None and not str(path).lower().removesuffix(".gz").endswith(
            (".tsv", ".tab")):
        src = source_of(path, key, delimiter, decimal)
    return src


def _columns(trained: Trained, targets: bool) -> tuple[list[str], list[str], list[str]]:
    """(target names read, number columns, text columns) of a file read for this model."""
    enc = trained.encoding
    labels = task_of(trained.loss_name) == "classes"
    names = list(trained.targets) if targets else []
    return names, enc.number_columns() + ([] if labels else names), enc.text_columns() + (names if labels else [])


def read_rows(trained: Trained, path: Path, *, targets: bool, keep: Optional[str] = None,
              key: str = "--data", table=None) -> tuple[np.ndarray, Optional[np.ndarray], Optional[list[str]], str]:
    """(x encoded and scaled as in training, y (scaled targets or class indices) or None, the kept column, source)
    of a file (CSV, TSV, Parquet, .gz text: as training read its data) with the checkpoint's columns. Missing
    cells are filled by the columns' policies; with ``targets`` (evaluate) a row without a target, or with a
    missing cell in a ``drop_rows`` column, is left out. ``table``: a pyarrow Table to read instead of the file,
    as a Parquet file's columns are read (``path`` then only names it in messages)."""
    src = _source(trained, path, key)
    names, numbers, texts = _columns(trained, targets)
    if table is None:
        raw = read_raw(src, numbers=numbers, texts=texts, keep=keep)
    else:
        raw = _in_memory(table, Path(path), key, numbers, texts, keep)
    if raw.rows == 0:
        raise DataError(f"{src.where}: no data rows after the header")
    x, y, kept, dropped = encoded(trained, raw, names if targets else None, src.where)
    if len(x) == 0:
        raise DataError(f"{src.where}: no rows left to evaluate (every row lacks a target or has a missing cell in "
                        "a drop_rows column)")
    where = src.where + (f" ({dropped} rows without a target or with a drop_rows cell missing, left out)"
                         if dropped else "")
    return x, y, kept, where


def encoded(trained: Trained, raw, targets: Optional[list[str]], where: str = ""):
    """(x encoded and scaled, y or None, the kept cells or None, rows left out) of one RawTable (a whole file or
    a batch of its rows); ``targets``: the target columns (evaluate), or None (predict: every row); ``where``:
    the file, named by a value that is not finite once scaled."""
    enc = trained.encoding
    labels = task_of(trained.loss_name) == "classes"
    kept_rows, _ = rows_to_drop(enc, raw, targets or [], "evaluate" if targets is not None else "predict")
    rows = np.flatnonzero(kept_rows)
    whole = len(rows) == raw.rows
    x = enc.transform(raw, None if whole else rows, "predict")
    if trained.x_scaling is not None:
        trained.x_scaling.apply(x, enc.names(), where)
    y = None
    if targets is not None:
        y, _ = targets_of(raw, rows, targets, trained.loss_name, trained.classes if labels else None)
        if not labels and trained.y_scaling is not None:
            trained.y_scaling.apply(y, list(targets), where)
    kept = None
    if raw.kept is not None:
        kept = raw.kept if whole else [raw.kept[i] for i in rows]
    return x, y, kept, raw.rows - len(rows)


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
    table = _read_own_data(trained)
    if not same_split(trained.split, table.split):
        raise DataError(f"{table.source}: the data no longer gives the validation rows the checkpoint's run held "
                        "out (the file changed); give --data CSV")
    x, y = table.val_x, table.val_y
    where = table.val_source if (table.split or {}).get("validation") == "file" else table.source
    if trained.x_scaling is not None:
        trained.x_scaling.apply(x, trained.encoding.names(), where)
    if trained.y_scaling is not None:
        trained.y_scaling.apply(y, list(trained.targets), where)
    return x, y, table.val_source or table.source


def same_split(saved: Optional[dict], mine: Optional[dict]) -> bool:
    """Whether the data read again gives the split the checkpoint recorded: the held-out rows' indices
    (``digest``) and the rows' content (``content``, in checkpoints written since it is recorded: an older one
    is checked for what it has)."""
    saved, mine = saved or {}, mine or {}
    return all(saved.get(k) is None or mine.get(k) == saved[k] for k in ("digest", "content"))


def _read_own_data(trained: Trained, encoding: bool = True):
    """The data of the checkpoint's config, read as in training without scaling. When the checkpoint's own
    config names the file (no --config), an error names the file and the problem, never the file's content:
    a crafted checkpoint may name any file (``data.path: /etc/passwd``)."""
    from backprop_cli.data.load import data_source
    from backprop_cli.data.readers import read_header

    cfg = trained.cfg
    raw = cfg.model_copy(update={"data": cfg.data.model_copy(update={"standardize": False,
                                                                       "standardize_target": False})})
    raw._base_dir, raw._source = cfg.base_dir, cfg.source
    enc = trained.encoding if encoding and cfg.data.kind == "csv" else None
    if trained.config_given or not isinstance(cfg.data, CsvData):
        return read_table(raw, enc)
    names = {*trained.features, *trained.targets, *(trained.classes or ())}
    for path, key in ((raw.data_path(), "data.path"), (raw.validation_path(), "data.validation")):
        if path is None:
            continue
        src = data_source(raw, path, key)
        try:
            header = read_header(src)
        except DataError as e:
            raise DataError(without_content(str(e), names)) from None
        absent = [n for n in [*trained.features, *cfg.data.target_columns] if n not in header]
        if absent:
            raise DataError(f"{src.where}: the checkpoint's config names this file ({key}), but it has no "
                            f"column {absent[0]!r} of the run's: not the run's data; give --data CSV")
    try:
        return read_table(raw, enc)
    except DataError as e:
        raise DataError(without_content(str(e), names)) from None


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')
_LISTED = re.compile(r" \((?:got|columns:)[^()]*\)")


def without_content(message: str, names: set) -> str:
    """An error line about a file a checkpoint names, with what came from the file taken out: every quoted text
    that is not one of the checkpoint's own names becomes '…', and the lists of what the file holds
    (``(columns: ...)``, ``(got ...)``) are left out."""
    def quoted(m: re.Match) -> str:
        return m.group(0) if m.group(0)[1:-1] in names else "'…'"

    return _LISTED.sub("", _QUOTED.sub(quoted, message))


def training_rows_among(trained: Trained, x: np.ndarray) -> Optional[int]:
    """How many of these rows (scaled as in training) are rows the checkpoint's run trained on: its config's
    CSV read again, split as in training (the saved validation digest must still match), its training rows'
    features compared value for value. None when that cannot be told (no CSV, the file gone or changed)."""
    cfg = trained.cfg
    if not isinstance(cfg.data, CsvData):
        return None
    try:
        table = _read_own_data(trained, encoding=False)
    except (DataError, OSError):
        return None
    if not same_split(trained.split, table.split):
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


PREDICT_BATCH_ROWS = 65_536  # rows per batch read (Parquet), per forward pass and per write


def prediction_columns(trained: Trained, keep: Optional[str] = None) -> list[str]:
    """The output's column names, in order (see :func:`predict_stream`): distinct, or a ConfigError naming the
    clash before any work: a ``--keep`` column named ``prediction`` or ``p_<class>``, or class or target names
    whose columns coincide, would make a JSON object drop one of them."""
    task = task_of(trained.loss_name)
    if task == "classes":
        header = ["prediction"] + [f"p_{c}" for c in trained.classes]
    elif task == "binary":
        header = [*trained.targets, *(f"p_{t}" for t in trained.targets)]
    else:
        header = list(trained.targets)
    if keep is not None:
        if keep == "":
            raise ConfigError("--keep: expected a column name (got '')")
        header = [keep, *header]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            mine = keep is not None and name == keep
            what = f"--keep {keep!r}" if mine else "the checkpoint's class or target names"
            raise ConfigError(f"{what}: the predictions would have two columns named {name!r} (columns: "
                              f"{', '.join(map(repr, header[:8]))}{', …' if len(header) > 8 else ''}); "
                              + ("keep another column" if mine else "the checkpoint is not usable for predict"))
        seen.add(name)
    return header


def predict_stream(trained: Trained, data: Path, keep: Optional[str] = None, table=None,
                   batch_rows: int = PREDICT_BATCH_ROWS, stream: Optional[bool] = None,
                   ) -> tuple[list[str], Iterator[list[list]]]:
    """(column names, the output a batch at a time, in input order: each batch a list of columns, each a list
    of Python values, one per row). Regression: one column per target,
    in the original units; cross_entropy: ``prediction`` (the class name) and ``p_<class>``; bce_with_logits:
    each target column's 0/1 prediction and ``p_<target>``. ``keep``: a column of the input passed through
    first (an id). The input is read a batch at a time too (data.batched: Parquet row groups, pyarrow's
    streaming CSV reader for a large text file), so memory holds one batch; a bad cell is an error when its
    batch is read, so the caller writes nowhere final until the iterator ends (cli/predict.py). ``table``: a
    pyarrow Table in memory (the Python API), read whole."""
    from backprop_cli.data.batched import raw_batches, rows_of

    header = prediction_columns(trained, keep)
    src = _source(trained, Path(data), "--data")
    _, numbers, texts = _columns(trained, False)
    if table is not None:
        raws = iter([_in_memory(table, Path(data), "--data", numbers, texts, keep)])
    else:
        raws = raw_batches(src, numbers=numbers, texts=texts, keep=keep, batch_rows=batch_rows, stream=stream)

    def batches() -> Iterator[list[list]]:
        total = 0
        for raw in raws:
            total += raw.rows
            for lo in range(0, raw.rows, batch_rows):
                part = raw if raw.rows <= batch_rows else rows_of(raw, lo, min(lo + batch_rows, raw.rows))
                x, _, kept, _ = encoded(trained, part, None, src.where)
                columns = _columns_of(trained, outputs(trained.model, torch.from_numpy(x)).float())
                yield columns if kept is None else [list(kept), *columns]
        if total == 0:
            raise DataError(f"{src.where}: no data rows after the header")

    return header, batches()


def _columns_of(trained: Trained, out: torch.Tensor) -> list[list]:
    """The output columns of one batch of the model's raw outputs (the per-batch transform), as Python lists:
    column-wise, so that no list per row is built."""
    task = task_of(trained.loss_name)
    if task == "classes":
        probs = torch.softmax(out, dim=1).numpy()
        names = trained.classes
        return [[names[k] for k in probs.argmax(axis=1).tolist()], *probs.T.tolist()]
    if task == "binary":
        probs = torch.sigmoid(out).numpy().reshape(len(out), -1)
        return [*(probs > 0.5).astype(np.int64).T.tolist(), *probs.T.tolist()]
    values = out.numpy().astype(np.float64).reshape(len(out), -1)
    if trained.y_scaling is not None:
        values = values * np.asarray(trained.y_scaling.std) + np.asarray(trained.y_scaling.mean)
    return values.T.tolist()


def predict(trained: Trained, data: Path, keep: Optional[str] = None, table=None) -> tuple[list[str], list[list]]:
    """One prediction per row of ``data``, in order: (column names, rows), all at once (the Python API; the
    command streams them: :func:`predict_stream`)."""
    header, batches = predict_stream(trained, data, keep, table)
    return header, [list(row) for columns in batches for row in zip(*columns)]

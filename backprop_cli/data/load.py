"""The configured data: the file read, its rows with a missing target (or a ``drop_rows`` cell) dropped, the
validation rows held out, every input encoded with what the training rows alone teach (categories, fill
values), standardized, and checked against the model and the loss. No torch until :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from backprop_cli.config import Config, CsvData, SyntheticData, is_classification, task_of
from backprop_cli.data.columns import column_codes, input_columns, reader_roles, rows_to_drop
from backprop_cli.data.encoding import Encoding
from backprop_cli.data.labels import labels_to_classes
from backprop_cli.data.readers import RawTable, Source, read_header, read_raw, source_of
from backprop_cli.data.split import content_digest, scale, split_and_scale, validation_rows
from backprop_cli.data.synthetic import synthetic
from backprop_cli.data.tables import Dataset, Table
from backprop_cli.errors import DataError
from backprop_cli.limits import MAX_CLASSES


def data_source(cfg: Config, path: Optional[Path] = None, key: str = "data.path") -> Source:
    """The Source of the config's data file (or of ``path``, read as the config reads its data)."""
    spec = cfg.data
    assert isinstance(spec, CsvData)
    return source_of(path if path is not None else cfg.data_path(), key, spec.delimiter, spec.decimal)


def read_file(src: Source, spec: CsvData, loss: str, encoding: Optional[Encoding] = None,
              features: Optional[list[str]] = None) -> tuple[RawTable, list[str], Encoding]:
    """(the file's used columns, the input columns, their codes: ``encoding`` as given, or typed from the file
    and not yet fitted). With ``encoding`` the columns are read as its types say (a validation file)."""
    header = read_header(src)
    if features is None:
        features = input_columns(spec, header, src)
    else:
        for name in [*features, *spec.target_columns]:
            if name not in header:
                from backprop_cli.data.readers import missing_column

                raise missing_column(src, src.key, name, header)
    targets = spec.target_columns
    labels = task_of(loss) == "classes"
    if labels and len(targets) != 1:
        raise DataError(f"{src.where}: data.target: cross_entropy takes one column of class labels (got {len(targets)})")
    if encoding is None:
        numbers, texts, infer = reader_roles(spec, features)
    else:
        numbers, texts, infer = encoding.number_columns(), encoding.text_columns(), []
    raw = read_raw(src, numbers=numbers + ([] if labels else targets), texts=texts + (targets if labels else []),
                   infer=infer, header=header, block=features)  # the inputs side by side: x without a copy
    if raw.rows == 0:
        raise DataError(f"{src.where}: no data rows after the header")
    return raw, features, encoding if encoding is not None else column_codes(spec, features, raw)


def targets_of(raw: RawTable, rows: np.ndarray, targets: list[str], loss: str,
               classes: Optional[list[str]] = None) -> tuple[np.ndarray, Optional[list[str]]]:
    """The target array of ``rows`` (float32 (rows, outputs), or int64 class indices) and the class names."""
    if task_of(loss) == "classes":
        return labels_to_classes(raw.columns[targets[0]].take(rows), raw.source, targets[0], classes, rows)
    y = np.empty((len(rows), len(targets)), dtype=np.float32)
    for j, name in enumerate(targets):
        y[:, j] = raw.columns[name][rows]
    return y, None


def read_table(cfg: Config, encoding: Optional[Encoding] = None) -> Table:
    """The configured data, read, split, encoded, scaled and checked against the model and the loss (no torch
    for a file). ``encoding``: a fitted one to apply instead of fitting one (a checkpoint's own validation
    rows). ``model.input_size: auto`` is resolved here, to the encoded width."""
    return _read_table(cfg, encoding)[0]


class FoldEncoder:
    """``train --folds``: the rows of a table read whole (:func:`read_fold_table`) encoded again for one fold,
    with the fill values of missing cells (mean, median, most_frequent) learnt from that fold's training rows
    only. The categories (and so the model's inputs) stay those of the whole table: every fold's model has
    the same inputs."""

    def __init__(self, raw: RawTable, kept: np.ndarray, encoding: Encoding):
        self.raw, self.kept, self.encoding = raw, kept, encoding

    def encode(self, train_rows: np.ndarray, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, Encoding]:
        """(the training rows' inputs, the held-out rows' inputs, the fold's encoding); rows index the table."""
        import copy

        fold = copy.deepcopy(self.encoding)
        fitted = copy.deepcopy(self.encoding).fit(self.raw, self.kept[train_rows])
        for code, own in zip(fold.columns, fitted.columns):
            code.fill = own.fill
        return (fold.transform(self.raw, self.kept[train_rows], "train"),
                fold.transform(self.raw, self.kept[held_out], "train"), fold)


def read_fold_table(cfg: Config) -> tuple[Table, Optional[FoldEncoder]]:
    """The table of ``train --folds`` (``cfg``: runs.folds.raw_config, every row unsplit and unscaled) and, for
    a file, the :class:`FoldEncoder` that encodes each fold's rows with its own fill values (None: synthetic)."""
    return _read_table(cfg, None, keep_rows=True)


def _read_table(cfg: Config, encoding: Optional[Encoding], keep_rows: bool = False) -> tuple[Table, Optional[FoldEncoder]]:
    loss = cfg.loss.name
    spec = cfg.data
    if isinstance(spec, SyntheticData):
        table = split_and_scale(synthetic(spec, cfg.model.input_size, cfg.model.output_size, cfg.split_seed, loss), cfg)
        check_fits(cfg, table)
        return table, None
    src = data_source(cfg)
    raw, features, enc = read_file(src, spec, loss, encoding)
    targets = spec.target_columns
    stage = "train" if encoding is None else "evaluate"  # evaluate: a checkpoint's own validation rows
    keep, no_target = rows_to_drop(enc, raw, targets, stage)
    kept = np.flatnonzero(keep)
    dropped = raw.rows - len(kept)
    if len(kept) == 0:
        raise DataError(f"{src.where}: no data rows left (every row has a missing cell in a used column)")
    y, classes = targets_of(raw, kept, targets, loss)
    vpath = cfg.validation_path()
    val = None
    if vpath is not None:
        train_rows, split, text = kept, None, None
    else:
        mask, split, text = validation_rows(y, src.where, cfg, content_digest(raw.columns, kept, [*features, *targets])
                                            if isinstance(spec.validation, float) else None)
        train_rows = kept if mask is None else kept[~mask]
        if mask is not None:
            val = (kept[mask], y[mask])
            y = y[~mask]
    if len(train_rows) == 0:
        raise DataError(f"{src.where}: data.validation leaves no training rows")
    if encoding is None:
        enc.fit(raw, None if len(train_rows) == raw.rows else train_rows)
    x = enc.transform(raw, None if len(train_rows) == raw.rows else train_rows, "train")
    table = Table(x, y, src.where, enc.names(), list(targets), classes, dropped=dropped, columns=list(features),
                  encoding=enc, dropped_target=no_target, split=split, val_source=text)
    if val is not None:
        table.val_x, table.val_y = enc.transform(raw, val[0], "train"), val[1]
    folds = FoldEncoder(raw, kept, enc) if keep_rows and val is None and vpath is None else None
    del raw
    if vpath is not None:
        vsrc = data_source(cfg, vpath, "data.validation")
        vraw, _, _ = read_file(vsrc, spec, loss, enc, features)
        vkeep, _ = rows_to_drop(enc, vraw, targets, stage)
        vrows = np.flatnonzero(vkeep)
        if len(vrows) == 0:
            raise DataError(f"{vsrc.where}: no data rows left (every row has a missing cell in a used column)")
        table.val_x = enc.transform(vraw, vrows, "validation")
        table.val_y, _ = targets_of(vraw, vrows, targets, loss, classes)
        table.split = {"validation": "file", "path": vsrc.where, "rows": int(len(vrows)),
                       "content": content_digest(vraw.columns, vrows, [*features, *targets])}
        table.val_source = vsrc.where
    scale(table, cfg, enc.scaled())
    if cfg.model.input_size is None:
        cfg.model.input_size = enc.width
    check_fits(cfg, table)
    return table, folds


def load_dataset(cfg: Config, table: Table | None = None) -> Dataset:
    """The configured data as tensors (from ``table`` when it was read already)."""
    import torch

    t = table if table is not None else read_table(cfg)
    vx = torch.from_numpy(t.val_x) if t.val_x is not None else None
    vy = torch.from_numpy(t.val_y) if t.val_y is not None else None
    return Dataset(torch.from_numpy(t.x), torch.from_numpy(t.y), t.source, t.feature_names, t.target_names,
                   vx, vy, t)


def check_fits(cfg: Config, ds: Table) -> None:
    """Shapes and target values against the model and the loss, with what to change."""
    m, loss = cfg.model, cfg.loss.name
    nfeat = ds.x.shape[1]
    if nfeat != m.input_size:
        how = f" ({ds.encoding.summary()})" if ds.encoding is not None else " feature columns"
        raise DataError(f"{ds.source}: the data gives {nfeat} inputs{how} but model.input_size is "
                        f"{m.input_size}; set model.input_size: auto (or {nfeat})")
    if task_of(loss) == "classes":
        k = len(ds.classes) if ds.classes is not None else int(ds.y.max()) + 1
        if m.output_size > MAX_CLASSES:  # synthetic classes (a label column is bounded as it is read)
            raise DataError(f"{ds.source}: model.output_size: {m.output_size:,} classes, more than the "
                            f"{MAX_CLASSES:,} a classification may have (every evaluation counts a classes × "
                            "classes confusion matrix)")
        if k != m.output_size:
            names = ", ".join(ds.classes[:8]) + (", …" if len(ds.classes) > 8 else "") if ds.classes else ""
            raise DataError(f"{ds.source}: the target has {k} classes ({names}) but model.output_size is "
                            f"{m.output_size}; set model.output_size: {k}")
    else:
        nout = ds.y.shape[1]
        if nout != m.output_size:
            raise DataError(f"{ds.source}: the data has {nout} target columns but model.output_size is "
                            f"{m.output_size}; set model.output_size: {nout}")
        for part, y in (("", ds.y), (" (validation)", ds.val_y)):
            if task_of(loss) == "binary" and y is not None and bool(((y < 0) | (y > 1)).any()):
                raise DataError(f"{ds.source}{part}: bce_with_logits needs targets between 0 and 1")
    rows = ds.samples
    if cfg.data.batch_size > rows:
        held = f" after holding out {ds.val_samples} validation rows" if ds.split and ds.split.get("validation") != "file" else ""
        raise DataError(f"{ds.source}: data.batch_size ({cfg.data.batch_size}) is larger than the "
                        f"{rows} training rows{held}; lower data.batch_size" + (" or data.validation" if held else ""))
    if not is_classification(loss) and ds.y.dtype != np.float32:
        raise DataError(f"{ds.source}: loss {loss} needs real-valued targets")




def data_problems(cfg: Config) -> list[str]:
    """What ``config validate`` checks in the data, without torch: each file exists and is readable, its header
    has every target, feature and ``data.columns`` column (all of them named at once), and then the whole
    read: the types fit the values, and the derived input width matches ``model.input_size``."""
    spec = cfg.data
    if not isinstance(spec, CsvData):
        return []
    problems = []
    files = [("data.path", cfg.data_path()), ("data.validation", cfg.validation_path())]
    for key, path in files:
        if path is None:
            continue
        src = data_source(cfg, path, key)
        try:
            header = read_header(src)
        except DataError as e:
            problems.append(str(e))
            continue
        wanted = [("data.target", spec.target_columns), ("data.features", spec.features or []),
                  ("data.columns", list(spec.columns or {}))]
        for what, names in wanted:
            for name in names:
                if name not in header:
                    problems.append(f"{src.where}: {what if key == 'data.path' else key}: column {name!r} is not in "
                                    f"the header (columns: {', '.join(header)})")
    if not problems:
        try:
            read_table(cfg)
        except DataError as e:
            problems.append(str(e))
    return problems

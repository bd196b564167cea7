"""Column types: which columns are inputs, how each is read (number, text, or inferred) and typed (number,
category, binary), and its missing-cell policy, from ``data.features``/``data.columns``/``data.missing``."""

from __future__ import annotations

from typing import Optional

import numpy as np

from backprop_cli.config import CsvData
from backprop_cli.config.schema import ColumnSpec
from backprop_cli.data.encoding import ColumnCode, Encoding
from backprop_cli.data.readers import RawTable, Source, Text, missing_column
from backprop_cli.errors import DataError

DEFAULT_POLICY = {"number": "median", "category": "category", "binary": "most_frequent"}
# What a missing cell in a missing: error column can be answered with where the model is a checkpoint's: each
# hint is one the command can follow (predict takes no config; evaluate takes --set on the checkpoint's config)
MISSING_HINTS = {
    "evaluate": "the model was trained with missing: error; evaluate --set data.columns.{name}.missing=drop_rows "
                "(or data.missing=drop_rows) leaves such rows out",
    "predict": "the model was trained with missing: error, which fills nothing: train with a fill policy "
               "(data.missing: auto, the default) to predict such rows",
}


def input_columns(spec: CsvData, header: list[str], src: Source) -> list[str]:
    """The input columns: ``data.features``, else every column but the targets; each checked against the
    header, and ``data.columns`` too (an unknown name is an error)."""
    targets = spec.target_columns
    present, wanted = set(header), set(targets)  # sets, not lists: 30,000 columns are not 30,000² comparisons
    for name in targets:
        if name not in present:
            raise missing_column(src, "data.target" if src.key == "data.path" else src.key, name, header)
    features = list(spec.features) if spec.features is not None else [h for h in header if h not in wanted]
    for name in features:
        if name not in present:
            raise missing_column(src, "data.features" if src.key == "data.path" else src.key, name, header)
    for name in (spec.columns or {}):
        if name not in present:
            raise DataError(f"{src.where}: data.columns: column {name!r} is not in the header "
                            f"(columns: {', '.join(header)})")
    overlap = sorted(set(targets) & set(features))
    if overlap:
        raise DataError(f"{src.where}: data.features: column {overlap[0]!r} is also a target")
    if not features:
        raise DataError(f"{src.where}: data.features: no feature columns left besides the target")
    return features


def reader_roles(spec: CsvData, features: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(read as numbers, read as text, inferred) for the input columns."""
    declared = spec.columns or {}
    numbers = [n for n in features if n in declared and declared[n].type == "number"]
    texts = [n for n in features if n in declared and declared[n].type in ("category", "binary")]
    declared_as = set(numbers) | set(texts)
    infer = [n for n in features if n not in declared_as]
    return numbers, texts, infer


def column_codes(spec: CsvData, features: list[str], raw: RawTable) -> Encoding:
    """Each input column's code, not yet fitted: its type (declared, or what the values are: numbers, two
    distinct texts = binary, more = category) and its resolved policy."""
    declared = spec.columns or {}
    out = []
    for name in features:
        c: ColumnSpec = declared.get(name) or ColumnSpec()
        col = raw.columns[name]
        kind = c.type or ("number" if not isinstance(col, Text) else
                          "binary" if len(col.values) == 2 else "category")
        policy = c.missing or spec.missing
        if policy == "auto" or (kind != "number" and policy in ("mean", "median")):
            policy = DEFAULT_POLICY[kind]
        if kind == "number" and c.fill is not None and not isinstance(c.fill, (int, float)):
            raise DataError(f"{raw.source.where}: data.columns.{name}.fill: a number column's fill must be a "
                            f"number (got {c.fill!r})")
        out.append(ColumnCode(name, kind, policy, c.indicator, c.fill, [], c.encoding if kind == "category"
                              else "onehot", c.embedding_size, c.on_unknown))
    return Encoding(out)


def rows_to_drop(enc: Encoding, raw: RawTable, targets: list[str], stage: str = "train") -> tuple[np.ndarray, int]:
    """(rows kept (a bool mask), how many of the dropped rows lack a target): rows with a missing target, and
    (``drop_rows``) with a missing cell in such a column. ``error`` policies raise at the first missing cell."""
    keep = np.ones(raw.rows, dtype=bool)
    for name in targets:
        keep &= ~raw.missing(name)
    no_target = int((~keep).sum())
    for c in enc.columns:
        if c.missing == "drop_rows" and stage != "predict":
            keep &= ~raw.missing(c.name)
    for c in enc.columns:
        if c.missing == "error":
            gone = raw.missing(c.name) & keep
            if gone.any():
                row = int(np.argmax(gone))
                hint = MISSING_HINTS.get(stage, "set data.columns.{name}.missing (median, most_frequent, ...) or "
                                         "data.missing: drop_rows").format(name=c.name)
                raise DataError(f"{raw.source.where}{raw.source.at(row)}: column {c.name!r}: missing value; {hint}")
    return keep, no_target


def describe_types(enc: Encoding) -> dict[str, str]:
    return {c.name: c.type for c in enc.columns}


def same_types(train: Encoding, raw: RawTable, what: str = "data.validation") -> Optional[str]:
    """The first column whose values in ``raw`` do not fit the training file's type (None: all fit)."""
    for c in train.columns:
        col = raw.columns[c.name]
        if (c.type == "number") == isinstance(col, Text):
            held = "text" if isinstance(col, Text) else "numbers"
            return f"{raw.source.where}: {what}: column {c.name!r} holds {held}, the training file's is a {c.type}"
    return None

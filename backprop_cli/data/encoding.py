"""Input columns as model inputs: numbers (missing cells filled), binary columns (one 0/1 input), categories
(one-hot, or an index into an ``nn.Embedding``), and ``NAME_missing`` indicators, as fit/transform objects.

:meth:`Encoding.fit` learns everything from the training rows only (the categories and their order, the fill
values); :meth:`Encoding.transform` applies it to any rows (validation, evaluate, predict) without a Python
loop over rows; :meth:`Encoding.plain` is what a checkpoint carries. docs/tables.md is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from backprop_cli.config.schema import MAX_CATEGORIES
from backprop_cli.data.readers import Column, RawTable, Text
from backprop_cli.errors import DataError

MISSING_CATEGORY = "<missing>"  # the level of a category's missing cells (missing: auto)
EMBEDDING_MAX = 600
POSITIVE = {"1", "1.0", "true", "yes", "y", "t"}  # binary: which of two values is 1 (else the later in order)


def embedding_width(n: int) -> int:
    """fastai's default embedding width for ``n`` categories: ``min(600, round(1.6 · n^0.56))``."""
    return int(min(EMBEDDING_MAX, round(1.6 * n ** 0.56)))


Where = Callable[[int], str]  # data row → ":LINE" (or ": row N")


@dataclass
class ColumnCode:
    """One input column: its type, its missing-cell policy (resolved: never ``auto``) and what was learnt."""

    name: str
    type: str  # number | category | binary
    missing: str  # error | drop_rows | mean | median | most_frequent | constant | category
    indicator: bool = False
    fill: Any = None  # the fill value: a number, or a level
    levels: list = field(default_factory=list)  # category: sorted levels; binary: [level 0, level 1]
    encoding: str = "onehot"  # category: onehot | embedding
    embedding_size: Optional[int] = None
    on_unknown: str = "zeros"

    @property
    def width(self) -> int:
        body = len(self.levels) if self.type == "category" and self.encoding == "onehot" else 1
        return body + int(self.indicator)

    def names(self) -> list[str]:
        if self.type == "category" and self.encoding == "onehot":
            out = [f"{self.name}={v}" for v in self.levels]
        else:
            out = [self.name]
        return out + ([f"{self.name}_missing"] if self.indicator else [])

    def scaled(self) -> list[bool]:
        """Which of its inputs data.standardize scales: the number itself, nothing else."""
        return [self.type == "number"] + [False] * (self.width - 1)

    # ------------------------------------------------------------------ fit

    def fit(self, col: Column, where: str) -> None:
        """Learn the levels and the fill value from the training rows ``col``."""
        if self.type == "number":
            gone = np.isnan(col)
            present = col[~gone] if gone.any() else col
            if self.missing in ("mean", "median", "most_frequent"):
                if len(present) == 0:
                    raise DataError(f"{where}: column {self.name!r}: no values in the training rows to take the "
                                    f"{self.missing} of")
                if self.missing == "mean":
                    self.fill = float(present.mean(dtype=np.float64))
                elif self.missing == "median":  # the middle value(s), averaged in float64
                    k = len(present)
                    mid = np.partition(present, [(k - 1) // 2, k // 2])[[(k - 1) // 2, k // 2]].astype(np.float64)
                    self.fill = float(mid.mean())
                else:
                    values, counts = np.unique(present, return_counts=True)
                    self.fill = float(values[int(np.argmax(counts))])
            elif self.missing == "constant":
                self.fill = float(self.fill)
            return
        counts = np.bincount(col.codes[col.codes >= 0], minlength=len(col.values))
        seen = [v for v, c in zip(col.values, counts) if c]
        if self.type == "binary":
            if len(seen) > 2:
                raise DataError(f"{where}: column {self.name!r}: type binary takes two values, the training rows "
                                f"have {len(seen)} ({', '.join(seen[:6])}{', …' if len(seen) > 6 else ''}); "
                                f"set data.columns.{self.name}.type: category")
            pos = [v for v in seen if v.lower() in POSITIVE]
            self.levels = sorted(seen, key=lambda v: (v in pos, v)) if len(seen) == 2 else list(seen)
        else:
            levels = sorted(seen)
            if self.missing == "category" and bool((col.codes < 0).any()):
                levels.append(MISSING_CATEGORY)
            if self.missing == "constant" and str(self.fill) not in levels:
                levels = sorted([*levels, str(self.fill)])
            if self.encoding == "onehot" and len(levels) > MAX_CATEGORIES:
                raise DataError(f"{where}: column {self.name!r} has {len(levels):,} distinct values, more than the "
                                f"{MAX_CATEGORIES:,} a one-hot column takes; set data.columns.{self.name}.encoding: "
                                "embedding, or leave the column out of data.features")
            self.levels = levels
            if self.encoding == "embedding" and self.embedding_size is None:
                self.embedding_size = embedding_width(len(levels) + 1)
        if self.missing == "most_frequent":
            if not counts.any():
                raise DataError(f"{where}: column {self.name!r}: no values in the training rows")
            self.fill = col.values[int(np.argmax(counts))]
        elif self.missing == "constant":
            self.fill = str(self.fill)
            if self.type == "binary" and self.fill not in self.levels:
                raise DataError(f"{where}: data.columns.{self.name}.fill: {self.fill!r} is not one of the column's "
                                f"two values ({', '.join(self.levels)})")

    # ------------------------------------------------------------------ transform

    def lookup(self, values: list[str]) -> np.ndarray:
        """Each of a text column's values as a level index (−2: not a level), then the fill of a missing cell."""
        index = {v: i for i, v in enumerate(self.levels)}
        fill = {"category": index.get(MISSING_CATEGORY, -2), "most_frequent": index.get(self.fill, -2),
                "constant": index.get(self.fill, -2)}.get(self.missing, -2)
        return np.array([index.get(v, -2) for v in values] + [fill], dtype=np.int64)

    def transform(self, col: Column, out: np.ndarray, src, stage: str, lut: Optional[np.ndarray] = None) -> None:
        """Write this column's inputs into ``out`` (rows, width), zeros on entry. ``lut``: :meth:`lookup` of
        the column's values (computed here when not given)."""
        gone = np.isnan(col) if self.type == "number" else (col.codes < 0)
        if gone.any() and self.missing in ("error", "drop_rows"):
            row = int(np.argmax(gone))
            why = (f"set data.columns.{self.name}.missing (median, most_frequent, ...) or data.missing: drop_rows"
                   if stage == "train" else f"the model was trained with missing: {self.missing}, which fills "
                   "nothing: train with a fill policy (data.missing: auto, the default) to predict such rows")
            raise DataError(f"{src.where}{src.at(row)}: column {self.name!r}: missing value; {why}")
        if self.indicator:
            out[:, -1] = gone
        if self.type == "number":
            v = out[:, 0]
            v[:] = col
            if gone.any():
                v[gone] = np.float32(self.fill)
            return
        if lut is None:
            lut = self.lookup(col.values)
        idx = lut[col.codes]  # code −1 (missing) picks the fill at the end; −2: a value not seen in training
        unknown = idx == -2
        if unknown.any() and (self.on_unknown == "error" or stage == "validation" or self.type == "binary"):
            row = int(np.argmax(unknown))
            value = col.values[int(col.codes[row])] if col.codes[row] >= 0 else "(missing)"
            known = ", ".join(self.levels[:8]) + (", …" if len(self.levels) > 8 else "")
            raise DataError(f"{src.where}{src.at(row)}: column {self.name!r}: {value!r} is not a value of the "
                            f"training rows ({known})")
        if self.type == "binary":
            out[:, 0] = idx == 1
        elif self.encoding == "embedding":
            out[:, 0] = np.where(unknown, 0, idx + 1)  # row 0 of the embedding: <unknown>
        else:
            rows = np.flatnonzero(~unknown)
            out[rows, idx[rows]] = 1.0

    def plain(self) -> dict:
        return {"name": self.name, "type": self.type, "missing": self.missing, "indicator": self.indicator,
                "fill": self.fill, "levels": list(self.levels), "encoding": self.encoding,
                "embedding_size": self.embedding_size, "on_unknown": self.on_unknown}


@dataclass
class Encoding:
    """Every input column's code, in the order of the inputs."""

    columns: list[ColumnCode]

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def names(self) -> list[str]:
        return [n for c in self.columns for n in c.names()]

    def scaled(self) -> np.ndarray:
        return np.array([s for c in self.columns for s in c.scaled()], dtype=bool)

    def text_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.type != "number"]

    def number_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.type == "number"]

    def embeddings(self) -> list[tuple[int, int, int]]:
        """(input index, rows (levels + <unknown>), width) of each embedded column."""
        out, at = [], 0
        for c in self.columns:
            if c.type == "category" and c.encoding == "embedding":
                out.append((at, len(c.levels) + 1, int(c.embedding_size)))
            at += c.width
        return out

    def summary(self) -> str:
        """``4 numbers + island (3) + sex (2) = 9 inputs``: how the width comes about."""
        nums = sum(1 for c in self.columns if c.type == "number")
        parts = [f"{nums} number{'s' * (nums != 1)}"] if nums else []
        for c in self.columns:
            if c.type == "binary":
                parts.append(f"{c.name} (binary)")
            elif c.type == "category":
                parts.append(f"{c.name} ({len(c.levels)}{' embedded' if c.encoding == 'embedding' else ''})")
        ind = sum(c.indicator for c in self.columns)
        if ind:
            parts.append(f"{ind} missing indicator{'s' * (ind != 1)}")
        return f"{' + '.join(parts)} = {self.width} inputs"

    def fit(self, raw: RawTable, rows: Optional[np.ndarray]) -> "Encoding":
        for c in self.columns:
            col = raw.columns[c.name]
            if rows is not None:
                col = col.take(rows) if isinstance(col, Text) else col[rows]
            c.fit(col, raw.source.where)
        return self

    BLOCK_ROWS = 1 << 14  # rows encoded at a time: a block of the result stays in cache while its columns are written

    def transform(self, raw: RawTable, rows: Optional[np.ndarray] = None, stage: str = "train") -> np.ndarray:
        """The inputs (rows, width) float32, C-contiguous, of ``rows`` of ``raw`` (default all), written a block
        of rows at a time (each column into the block), not a row at a time."""
        whole = rows is None  # all rows: each block is a slice (a view), not a gather
        n = raw.rows if whole else len(rows)
        rows = np.arange(n) if whole else rows
        x = np.zeros((n, self.width), dtype=np.float32)
        luts = []
        for c in self.columns:
            col = raw.columns[c.name]
            expected = np.ndarray if c.type == "number" else Text
            if not isinstance(col, expected):
                raise DataError(f"{raw.source.where}: column {c.name!r}: the model's column is a {c.type}, "
                                f"this file's holds {'text' if isinstance(col, Text) else 'numbers'}")
            luts.append(c.lookup(col.values) if isinstance(col, Text) else None)
        for lo in range(0, n, self.BLOCK_ROWS):
            part = rows[lo:lo + self.BLOCK_ROWS]
            block = x[lo:lo + self.BLOCK_ROWS]
            src = _Shifted(raw.source, part)
            at = 0
            for c, lut in zip(self.columns, luts):
                col = raw.columns[c.name]
                pick = slice(lo, lo + self.BLOCK_ROWS) if whole else part
                col = Text(col.codes[pick], col.values) if isinstance(col, Text) else col[pick]
                c.transform(col, block[:, at:at + c.width], src, stage, lut)
                at += c.width
        return x

    def plain(self) -> dict:
        return {"columns": [c.plain() for c in self.columns]}

    @staticmethod
    def from_plain(d: Any, where: str) -> "Encoding":
        """A checkpoint's encoding, checked (CheckpointError-worthy problems raise ValueError)."""
        if not isinstance(d, dict) or not isinstance(d.get("columns"), list) or not d["columns"]:
            raise ValueError("data.encoding: expected {columns: [...]}")
        out = []
        for i, c in enumerate(d["columns"]):
            ok = isinstance(c, dict) and isinstance(c.get("name"), str) and c.get("type") in (
                "number", "category", "binary") and isinstance(c.get("levels"), list) and all(
                isinstance(v, str) for v in c["levels"]) and c.get("encoding") in ("onehot", "embedding") \
                and c.get("missing") in ("error", "drop_rows", "mean", "median", "most_frequent", "constant",
                                         "category") and isinstance(c.get("indicator"), bool)
            if ok and c["type"] == "number" and c["missing"] in ("mean", "median", "most_frequent", "constant"):
                ok = isinstance(c.get("fill"), (int, float)) and not isinstance(c["fill"], bool) \
                    and np.isfinite(c["fill"])
            if ok and c["encoding"] == "embedding":
                ok = isinstance(c.get("embedding_size"), int) and 0 < c["embedding_size"] <= 1 << 20
            if not ok:
                raise ValueError(f"data.encoding.columns[{i}]: not a valid column code")
            out.append(ColumnCode(c["name"], c["type"], c["missing"], c["indicator"], c.get("fill"),
                                  list(c["levels"]), c["encoding"], c.get("embedding_size"),
                                  c.get("on_unknown", "zeros")))
        return Encoding(out)


class _Shifted:
    """A Source seen through a subset of its rows: row ``i`` of the subset is row ``rows[i]`` of the file."""

    def __init__(self, src, rows: np.ndarray):
        self.src, self.rows, self.where = src, rows, src.where

    def at(self, row: int) -> str:
        return self.src.at(int(self.rows[row]))

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
from backprop_cli.data.readers import Column, RawTable, Text, table_array
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

    def fit(self, col: Column, where: str, scratch: bool = False) -> None:
        """Learn the levels and the fill value from the training rows ``col`` (``scratch``: a copy of them, which
        the median may reorder in place)."""
        if self.type == "number":
            gone = np.isnan(col)
            present = col[~gone] if gone.any() else col
            scratch = scratch or present is not col
            if self.missing in ("mean", "median", "most_frequent"):
                if len(present) == 0:
                    raise DataError(f"{where}: column {self.name!r}: no values in the training rows to take the "
                                    f"{self.missing} of")
                if self.missing == "mean":
                    self.fill = float(present.mean(dtype=np.float64))
                elif self.missing == "median":  # the middle value(s), averaged in float64
                    k = len(present)
                    upper = present if scratch else present.copy()
                    upper.partition(k // 2)  # one selection, in place; the lower middle is the largest below
                    lo = upper[k // 2] if k % 2 else upper[:k // 2].max()
                    self.fill = float((np.float64(lo) + np.float64(upper[k // 2])) / 2)
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

    def transform(self, col: Column, x: np.ndarray, at: int, src, stage: str, lut: np.ndarray) -> None:
        """Write this column's inputs into columns ``at`` … ``at + width`` of ``x`` (rows, inputs), zeros on
        entry; a number column's values are there already (``col`` is unused), only its missing cells are
        filled. ``col``: the column's rows of ``x``; ``lut``: :meth:`lookup` of a text column's values."""
        gone = np.isnan(x[:, at]) if self.type == "number" else (col.codes < 0)
        if gone.any() and self.missing in ("error", "drop_rows"):
            row = int(np.argmax(gone))
            why = (f"set data.columns.{self.name}.missing (median, most_frequent, ...) or data.missing: drop_rows"
                   if stage == "train" else f"the model was trained with missing: {self.missing}, which fills "
                   "nothing: train with a fill policy (data.missing: auto, the default) to predict such rows")
            raise DataError(f"{src.where}{src.at(row)}: column {self.name!r}: missing value; {why}")
        if self.indicator:
            x[:, at + self.width - 1] = gone
        if self.type == "number":
            if gone.any():
                x[np.flatnonzero(gone), at] = np.float32(self.fill)
            return
        idx = lut[col.codes]  # code −1 (missing) picks the fill at the end; −2: a value not seen in training
        unknown = idx == -2
        if unknown.any() and (self.on_unknown == "error" or stage == "validation" or self.type == "binary"):
            row = int(np.argmax(unknown))
            value = col.values[int(col.codes[row])] if col.codes[row] >= 0 else "(missing)"
            known = ", ".join(self.levels[:8]) + (", …" if len(self.levels) > 8 else "")
            raise DataError(f"{src.where}{src.at(row)}: column {self.name!r}: {value!r} is not a value of the "
                            f"training rows ({known})")
        if self.type == "binary":
            x[:, at] = idx == 1
        elif self.encoding == "embedding":
            x[:, at] = np.where(unknown, 0, idx + 1)  # row 0 of the embedding: <unknown>
        else:  # one-hot: a 1 at (row, at + level), written through the flat view of the C-contiguous rows
            rows = np.flatnonzero(~unknown) if unknown.any() else np.arange(len(idx))
            x.reshape(-1)[rows * x.shape[1] + (at + idx[rows])] = 1.0

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
        code = {c.name: c for c in self.columns}
        done = set()
        for name, col in _contiguous_numbers(raw, [c.name for c in self.columns if c.type == "number"], rows):
            code[name].fit(col, raw.source.where, scratch=True)  # a group of the block's columns at a time
            done.add(name)
        for c in self.columns:
            if c.name not in done:
                col = raw.columns[c.name]
                if rows is not None:
                    col = col.take(rows) if isinstance(col, Text) else col[rows]
                c.fit(col, raw.source.where)
        return self

    def transform(self, raw: RawTable, rows: Optional[np.ndarray] = None, stage: str = "train") -> np.ndarray:
        """The inputs (rows, width) float32, C-contiguous, of ``rows`` of ``raw`` (default all), a column (or a run
        of number columns) at a time over all rows, never a row at a time. With every row, and inputs that are
        exactly the fast reader's number block (``raw.block``, same columns in the same order), the result is
        that block itself, its missing cells filled in place: no copy (read nothing of ``raw`` after)."""
        whole = rows is None
        n = raw.rows if whole else len(rows)
        luts = []
        for c in self.columns:
            col = raw.columns[c.name]
            expected = np.ndarray if c.type == "number" else Text
            if not isinstance(col, expected):
                raise DataError(f"{raw.source.where}: column {c.name!r}: the model's column is a {c.type}, "
                                f"this file's holds {'text' if isinstance(col, Text) else 'numbers'}")
            luts.append(c.lookup(col.values) if isinstance(col, Text) else None)
        names, matrix = raw.block if raw.block is not None else ([], None)
        if whole and names and names == [c.name for c in self.columns] and not any(
                c.type != "number" or c.indicator for c in self.columns):
            x = matrix
        else:
            x = table_array((n, self.width), zeros=True)
            self._numbers(raw, rows, x)
        src = raw.source if whole else _Shifted(raw.source, rows)
        starts = np.cumsum([0] + [c.width for c in self.columns])[:-1]
        numbers = [int(at) for c, at in zip(self.columns, starts) if c.type == "number"]
        nan = dict(zip(numbers, _nan_columns(x, numbers)))
        for c, lut, at in zip(self.columns, luts, starts):
            col = raw.columns[c.name]
            if isinstance(col, Text) and not whole:
                col = col.take(rows)
            if c.type != "number" or c.indicator or c.missing in ("error", "drop_rows") or nan[int(at)]:
                c.transform(col, x, int(at), src, stage, lut)
        return x

    def _numbers(self, raw: RawTable, rows: Optional[np.ndarray], x: np.ndarray) -> None:
        """Copy the number columns' values into ``x``: a run of them that sits side by side in ``raw.block`` as
        one slice copy, any other a column at a time."""
        names, matrix = raw.block if raw.block is not None else ([], None)
        where = {name: j for j, name in enumerate(names)}
        starts = np.cumsum([0] + [c.width for c in self.columns])
        i = 0
        while i < len(self.columns):
            c = self.columns[i]
            if c.type != "number":
                i += 1
                continue
            j = i  # the run i … j: side by side in x (no indicator between) and in the block
            if c.name in where:
                while (j + 1 < len(self.columns) and not self.columns[j].indicator
                       and self.columns[j + 1].type == "number"
                       and where.get(self.columns[j + 1].name) == where[self.columns[j].name] + 1):
                    j += 1
                src, b = matrix, where[c.name]
                cols = slice(b, b + j - i + 1)
            else:
                src, cols = raw.columns[c.name][:, None], slice(0, 1)
            out = slice(int(starts[i]), int(starts[i]) + j - i + 1)
            if rows is None:
                x[:, out] = src[:, cols]
            else:
                for lo in range(0, len(rows), self.GATHER_ROWS):
                    x[lo:lo + self.GATHER_ROWS, out] = src[rows[lo:lo + self.GATHER_ROWS], cols]
            i = j + 1

    GATHER_ROWS = 1 << 16  # rows gathered at a time (a bounded temporary)

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


def _contiguous_numbers(raw: RawTable, names: list[str], rows: Optional[np.ndarray], group: int = 4):
    """(name, the column's ``rows`` as a contiguous array) of the number columns ``names`` that sit in the fast
    reader's block: a few side by side copied out at a time (one pass over the matrix per group, not per column)."""
    if raw.block is None:
        return
    block, matrix = raw.block
    where = {n: j for j, n in enumerate(block)}
    want = sorted(where[n] for n in names if n in where)
    for lo in range(0, len(want), group):
        js = want[lo:lo + group]
        a, b = js[0], js[-1] + 1
        n = raw.rows if rows is None else len(rows)
        t = np.empty((b - a, n), dtype=np.float32)
        for r in range(0, n, 1 << 14):  # transposed a cache-sized slab at a time: one pass over the matrix
            t[:, r:r + (1 << 14)] = (matrix[r:r + (1 << 14), a:b] if rows is None else
                                     matrix[rows[r:r + (1 << 14)], a:b]).T
        for j in js:
            yield block[j], t[j - a]
        del t


def _nan_columns(x: np.ndarray, columns: list[int], chunk: int = 1 << 14) -> np.ndarray:
    """Which of ``x``'s ``columns`` hold a NaN: one pass over the rows, a slab at a time."""
    out = np.zeros(len(columns), dtype=bool)
    if not columns:
        return out
    a, b = min(columns), max(columns) + 1
    pick = np.array(columns) - a
    for lo in range(0, x.shape[0], chunk):
        out |= np.isnan(x[lo:lo + chunk, a:b]).any(axis=0)[pick]
    return out


class _Shifted:
    """A Source seen through a subset of its rows: row ``i`` of the subset is row ``rows[i]`` of the file."""

    def __init__(self, src, rows: np.ndarray):
        self.src, self.rows, self.where = src, rows, src.where

    def at(self, row: int) -> str:
        return self.src.at(int(self.rows[row]))

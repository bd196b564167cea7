"""What ``init --csv`` needs to know about a table file: its delimiter and decimal mark (sniffed), and each
column's type, distinct and missing counts, and whether it looks like an id."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from backprop_cli.data.readers import Source, Text, read_header, read_raw, source_of
from backprop_cli.errors import DataError

SNIFF_BYTES = 1 << 16
DELIMITERS = ",;\t|"
CATEGORY_INTEGERS = 20  # integer columns with at most this many values may be categories (fastai's max_card)


@dataclass
class ColumnSurvey:
    name: str
    kind: str  # number | category | binary
    distinct: int
    missing: int
    integers: bool  # a number column whose every value is an integer
    id_like: bool  # every row a different value, like an id
    values: list[str]  # the distinct values (text), at most ``cap``
    counts: dict[str, int] = field(default_factory=dict)  # rows of each value (where ``values`` holds them all)

    def describe(self) -> str:
        more = f", {self.missing} missing" if self.missing else ""
        return f"{self.kind}, {self.distinct} distinct{more}"


@dataclass
class Survey:
    source: Source
    header: list[str]
    rows: int
    columns: dict[str, ColumnSurvey]


def sniff(path: Path) -> tuple[Optional[str], str]:
    """(the delimiter, the decimal mark) of a text file, from its first 64 KiB (None: not sniffed)."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(SNIFF_BYTES).decode("utf-8-sig", errors="replace")
    except (OSError, EOFError):
        return None, "."
    lines = [ln for ln in head.splitlines()[:50] if ln.strip()]
    if len(head) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    if not lines:
        return None, "."
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in DELIMITERS}
        delimiter = max(counts, key=counts.get) if max(counts.values()) else None
    decimal = "."
    if delimiter and delimiter != ",":
        cells = [c.strip() for ln in lines[1:] for c in ln.split(delimiter)]
        comma = sum(1 for c in cells if _decimal_comma(c))
        dot = sum(1 for c in cells if _decimal_dot(c))
        decimal = "," if comma > dot else "."
    return delimiter, decimal


def _decimal_comma(c: str) -> bool:
    head, sep, tail = c.lstrip("-").partition(",")
    return bool(sep) and head.isdigit() and tail.isdigit()


def _decimal_dot(c: str) -> bool:
    head, sep, tail = c.lstrip("-").partition(".")
    return bool(sep) and head.isdigit() and tail.isdigit()


def survey(src: Source, cap: int = 1000) -> Survey:
    """One read of every column (types inferred as ``train`` infers them)."""
    header = read_header(src)
    raw = read_raw(src, infer=header, header=header)
    out = {}
    for name in header:
        col = raw.columns[name]
        if isinstance(col, Text):
            present = col.codes[col.codes >= 0]
            counts = np.bincount(present, minlength=len(col.values))
            values = [v for v, c in zip(col.values, counts) if c]
            kind = "binary" if len(values) == 2 else "category"
            distinct, missing = len(values), int((col.codes < 0).sum())
            out[name] = ColumnSurvey(name, kind, distinct, missing, False,
                                     distinct == len(present) and distinct >= 10, values[:cap],
                                     {v: int(c) for v, c in zip(col.values, counts) if c} if distinct <= cap else {})
        else:
            present = col[~np.isnan(col)]
            uniq, counts = np.unique(present, return_counts=True)
            integers = bool(len(present)) and bool(np.all(present == np.round(present)))
            id_like = integers and len(uniq) == len(present) and len(uniq) >= 10 and \
                float(uniq[-1] - uniq[0]) == len(uniq) - 1
            values = [_number_text(v) for v in uniq[:cap + 1]] if len(uniq) <= cap else []
            out[name] = ColumnSurvey(name, "number", len(uniq), int(len(col) - len(present)), integers, id_like,
                                     values, dict(zip(values, map(int, counts))) if values else {})
    return Survey(src, header, raw.rows, out)


def _number_text(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(float(v))


def survey_file(path: Path, key: str = "--csv", max_columns: Optional[int] = None,
                too_many: str = "") -> Survey:
    """Sniff, then survey: the Source carries the delimiter and decimal mark found. A header of more than
    ``max_columns`` names is refused from the header alone (one line, ending in ``too_many``), before any
    row is read."""
    src = source_of(path, key)
    if src.format == "text":
        delimiter, decimal = sniff(path)
        if delimiter is not None:
            src = source_of(path, key, delimiter, decimal)
    header = read_header(src)
    if src.format == "text" and len(header) == 1:
        raise DataError(f"{src.where}: the header has one column ({header[0][:60]!r}) with the delimiter "
                        f"{src.delimiter!r}: give data.delimiter")
    if max_columns is not None and len(header) > max_columns:
        raise DataError(f"{src.where}: {len(header):,} columns, more than the {max_columns:,} {too_many}")
    return survey(src)

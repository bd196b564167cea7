"""Reading a table file's columns: CSV/TSV text (any delimiter, a decimal comma, gzip-compressed) and Parquet.

Every reader takes one :class:`Source` (the file, how the user names it, the config key, its format,
delimiter, decimal mark and compression) and the columns to read, each as a number (float32; a missing cell
is NaN), a text (codes into its distinct stripped values; a missing cell is −1) or "infer" (a number if every
present cell is one, else a text; a column that is mostly numbers with a few other cells is an error naming
the first). Nothing here decides what a missing cell means: that is the column's policy (``encoding.py``).

Large text files are read by ``pyarrow.csv`` (``arrowcsv.py``: multi-threaded, only the columns used); when it
refuses the file the exact reader (Python's ``csv`` module) reads it and names the line and the column of the
problem. Small files go through the exact reader alone (no pyarrow import). Both give the same table by
construction: the same header names (stripped here, handed to pyarrow), the same whitespace stripped
(:data:`STRIP`), the same missing tokens, and every number rounded once from its decimal text to the nearest
float32 (:func:`to_float32`, as pyarrow's parser rounds); ``tests/test_readers_agree.py`` checks it on
generated files.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from backprop_cli.data.tables import display_path
from backprop_cli.errors import DataError

# Cells that mean "no value" (pyarrow's defaults, less the exotic ones), compared after stripping spaces.
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "#N/A")
FAST_READER_BYTES = 1 << 20  # files at least this large go through pyarrow; smaller ones through the exact reader
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_LIMIT = 2.0 ** 128 - 2.0 ** 103  # halfway from FLOAT32_MAX to 2**128: a number at least this large is inf
STRIP = " \t\r\n\x0b\x0c"  # the whitespace stripped around names and values (pyarrow's utf8_trim gets the same)
PARQUET_SUFFIXES = (".parquet", ".pq")
TAB_SUFFIXES = (".tsv", ".tab")


@dataclass(frozen=True)
class Source:
    """One table file and how to read it: the one set of arguments every reader here takes."""

    path: Path
    key: str = "data.path"  # the config key or option that named the file
    delimiter: str = ","
    decimal: str = "."
    format: str = "text"  # text | parquet
    compression: Optional[str] = None  # gzip | None
    where: str = ""  # the path as the user writes it

    def at(self, row: int) -> str:
        """Where data row ``row`` (from 0) is: ``:LINE`` of a text file, ``: row N`` of a Parquet file."""
        if self.format == "parquet":
            return f": row {row + 1}"
        line = line_of_row(self, row)
        return f":{line}" if line else ""


def source_of(path: Path, key: str = "data.path", delimiter: Optional[str] = None, decimal: str = ".") -> Source:
    """A Source for ``path``: Parquet by its suffix (``.parquet``, ``.pq``), otherwise text, gzip-compressed when
    it ends in ``.gz``, tab-separated when it is ``.tsv``/``.tab`` (``delimiter`` overrides)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    last = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes and not gz else "")
    where = display_path(path)
    if last in PARQUET_SUFFIXES:
        return Source(path, key, ",", ".", "parquet", None, where)
    if delimiter is None:
        delimiter = "\t" if last in TAB_SUFFIXES else ","
    return Source(path, key, delimiter, decimal, "text", "gzip" if gz else None, where)


@dataclass
class Text:
    """A text column: ``codes`` (int32, −1 for a missing cell) into ``values``, its distinct stripped texts."""

    codes: np.ndarray
    values: list[str]

    def take(self, rows: np.ndarray) -> "Text":
        return Text(self.codes[rows], self.values)


Column = Union[np.ndarray, Text]


@dataclass
class RawTable:
    """The columns read from a file, all rows in order."""

    header: list[str]
    columns: dict[str, Column]
    rows: int
    source: Source
    kept: Optional[list[str]] = None  # the ``keep`` column's cells as written
    formats: dict = field(default_factory=dict)  # column → the file's own type name (Parquet), for messages
    # (names, matrix): number columns read side by side into one row-major float32 matrix, each column of
    # ``columns`` a view of it (the fast reader's ``block``; None from the other readers)
    block: Optional[tuple[list[str], np.ndarray]] = None

    def missing(self, name: str) -> np.ndarray:
        c = self.columns[name]
        return (c.codes < 0) if isinstance(c, Text) else np.isnan(c)


def table_array(shape, zeros: bool = False) -> np.ndarray:
    """A new float32 array of table size, its memory not advised as huge pages (numpy advises every large
    allocation so): where free memory is fragmented, the kernel compacts memory to fault in each 2 MiB page
    (measured here, 1M × 130 float32 = 500 MiB first written: 2.2 s of system time advised, 0.4 s not;
    benchmarks/README.md, "Loading tables")."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage as advise
    except ImportError:  # numpy < 2, or a numpy without it
        advise = None
    was = advise(False) if advise is not None else None
    try:
        return np.zeros(shape, dtype=np.float32) if zeros else np.empty(shape, dtype=np.float32)
    finally:
        if advise is not None:
            advise(was)


# --------------------------------------------------------------------------- opening


def _open(src: Source):
    """The file as a binary stream, if it is a regular file (one line naming the key otherwise)."""
    from backprop_cli.io.files import open_regular

    try:
        return open_regular(src.path, "file", DataError)
    except DataError as e:
        raise DataError(f"{e} ({src.key})") from None


def _text(f, src: Source) -> io.TextIOWrapper:
    raw = gzip.GzipFile(fileobj=f, mode="rb") if src.compression == "gzip" else f
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _records(f, src: Source) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of every non-empty record of a binary text stream (the header included)."""
    reader = csv.reader(_text(f, src), delimiter=src.delimiter)
    where = src.where
    try:
        for cells in reader:
            if cells:  # an empty line
                yield reader.line_num, cells
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{where}:{reader.line_num}: malformed CSV: {e}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{where}: not a readable gzip file ({e})") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror or e}") from None


def read_header(src: Source) -> list[str]:
    """The column names (checked: none empty, none twice)."""
    if src.format == "parquet":
        from backprop_cli.data.parquet import parquet_file

        pf, f = parquet_file(src)
        with f:
            header = [str(n) for n in pf.schema_arrow.names]
        if not header:
            raise DataError(f"{src.where}: the Parquet file has no columns")
    else:
        with _open(src) as f:
            first = next(_records(f, src), None)
        if first is None:
            raise DataError(f"{src.where}: empty file; expected a header row and data rows")
        header = [h.strip(STRIP) for h in first[1]]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(f"{src.where}:1: the header has an empty column name")
        if name in seen:
            raise DataError(f"{src.where}:1: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def missing_column(src: Source, key: str, name: str, header: list[str]) -> DataError:
    hint = ""
    if len(header) == 1 and (sep := next((c for c in ";\t|," if c in header[0] and c != src.delimiter), None)):
        hint = f"; the file seems to separate columns with {sep!r}: set data.delimiter: {sep!r}"
    return DataError(f"{src.where}: {key}: column {name!r} is not in the header (columns: {', '.join(header)}){hint}")


def header_lines(src: Source) -> int:
    """The physical lines up to the end of the header record of a text file (blank lines before it included)."""
    with _open(src) as f:
        first = next(_records(f, src), None)
    return first[0] if first else 0


def line_of_row(src: Source, row: int) -> Optional[int]:
    """The line of data row ``row`` (from 0; empty lines are not rows) of a text file."""
    with _open(src) as f:
        for i, (line, _) in enumerate(_records(f, src)):
            if i == row + 1:
                return line
    return None


# --------------------------------------------------------------------------- reading


def read_raw(src: Source, *, numbers: list[str] = (), texts: list[str] = (), infer: list[str] = (),
             keep: Optional[str] = None, header: Optional[list[str]] = None,
             fast: Optional[bool] = None, block: Sequence[str] = ()) -> RawTable:
    """The named columns of ``src``: ``numbers`` as float32 (NaN: missing), ``texts`` as :class:`Text`,
    ``infer`` as either; ``keep``: a column passed through as written. Every problem names the file, the
    line and the column. ``fast``: force (True) or avoid (False) pyarrow's CSV reader (default: by size).
    ``block``: the number columns the fast reader places side by side in one matrix (``RawTable.block``)."""
    header = header if header is not None else read_header(src)
    numbers, texts, infer = list(numbers), list(texts), list(infer)
    present = set(header)  # a set: 30,000 columns are not 30,000² comparisons
    for name in [*numbers, *texts, *infer, *([keep] if keep else [])]:
        if name not in present:
            raise missing_column(src, src.key, name, header)
    if src.format == "parquet":
        from backprop_cli.data.parquet import read_parquet

        return read_parquet(src, header, numbers, texts, infer, keep, block)
    if fast is None:
        try:
            fast = src.path.stat().st_size >= FAST_READER_BYTES
        except OSError:
            fast = False
    if fast:
        from backprop_cli.data.arrowcsv import read_fast

        table = read_fast(src, header, numbers, texts, infer, keep, block)
        if table is not None:
            return table
    return _read_exact(src, header, numbers, texts, infer, keep)


def _number(cell: str, src: Source, line: int, column: str) -> float:
    """A cell as float64 (NaN: missing), checked to be a finite number; :func:`to_float32` rounds it."""
    text = cell.strip(STRIP)
    if text in MISSING_TOKENS:
        return math.nan
    try:
        v = float(text.replace(",", ".") if src.decimal == "," else text)
    except ValueError:
        raise DataError(f"{src.where}:{line}: column {column!r}: not a number (got {text!r}); if it is a "
                        f"category, set data.columns.{column}.type: category") from None
    if not math.isfinite(v):
        raise DataError(f"{src.where}:{line}: column {column!r}: not a finite number (got {text!r})")
    if abs(v) > FLOAT32_MAX and np.isinf(to_float32(np.array([v]), lambda rows: [text])[0]):
        raise _beyond(src, column, text, f":{line}")
    return v


def _is_number(text: str, decimal: str) -> bool:
    try:
        return math.isfinite(float(text.replace(",", ".") if decimal == "," else text))
    except ValueError:
        return False


def to_float32(v: np.ndarray, text_of) -> np.ndarray:
    """float64 values of decimal texts as float32, each rounded once from its text to the nearest float32 (ties
    to even), as pyarrow's parser (fast_float) rounds: casting the float64 rounds twice, which differs when the
    float64 is exactly halfway between two float32s and the text is not (``1.0000000596046448``).
    ``text_of(rows)``: the texts of those rows (asked only for such halfway values, which are rare). A value
    beyond float32's range comes out as ±inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = v.astype(np.float32)
        a = np.abs(v)
        bits = v.view(np.uint64)
        tie = (a >= 2.0 ** -126) & (a < 2.0 ** 128) & ((bits & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000))
        small = a < 2.0 ** -126  # float32's subnormals: a step of 2**-149
        if small.any():
            s = a[small] * 2.0 ** 149
            tie[small] = (s - np.floor(s)) == 0.5
    rows = np.flatnonzero(tie)
    if len(rows):
        from decimal import Decimal

        for row, text in zip(rows, text_of(rows)):
            exact, mid = Decimal(text.replace(",", ".")), Decimal(float(v[row]))
            if exact == mid:
                continue  # a true tie: to even, as the cast did
            up = exact > mid  # the nearest float32 is the neighbour above the midpoint
            f = out[row]
            if (float(f) > float(v[row])) != up:
                out[row] = np.nextafter(f, np.float32(np.inf if up else -np.inf))
    return out


def _beyond(src: Source, name: str, text: str, at: str) -> DataError:
    return DataError(f"{src.where}{at}: column {name!r}: {text} is beyond float32's range "
                     f"(±{FLOAT32_MAX:.4g}), the precision the model computes in")


def _cells(src: Source, rows: np.ndarray, index: int) -> list[str]:
    """The stripped cells of column ``index`` in data rows ``rows`` (sorted) of a text file: a second pass."""
    want, out = set(int(r) for r in rows), {}
    with _open(src) as f:
        records = _records(f, src)
        next(records, None)
        for row, (_, cells) in enumerate(records):
            if row in want:
                out[row] = cells[index].strip(STRIP)
    return [out[int(r)] for r in rows]


def _read_exact(src: Source, header, numbers, texts, infer, keep) -> RawTable:
    """Python's csv module: every cell checked, every problem named by line and column."""
    col = {name: i for i, name in enumerate(header)}
    nidx = [col[n] for n in numbers]
    tidx = [col[n] for n in texts]
    iidx = [col[n] for n in infer]
    kidx = col[keep] if keep else None
    width = len(header)
    nums: list[list[float]] = [[] for _ in nidx]
    strs: list[list[str]] = [[] for _ in [*tidx, *iidx]]
    lines: list[int] = []
    kept: list[str] = []
    with _open(src) as f:
        records = _records(f, src)
        next(records, None)  # the header
        for line, cells in records:
            if len(cells) != width:
                hint = "; set data.decimal: ',' or another data.delimiter" if (
                    src.delimiter == "," and len(cells) > width) else ""
                raise DataError(f"{src.where}:{line}: row has {len(cells)} cells, the header has {width}{hint}")
            for out, i in zip(nums, nidx):
                out.append(_number(cells[i], src, line, header[i]))
            for out, i in zip(strs, (*tidx, *iidx)):
                out.append(cells[i].strip(STRIP))
            if iidx:
                lines.append(line)
            if kidx is not None:
                kept.append(cells[kidx])
    columns: dict[str, Column] = {}
    for name, i, values in zip(numbers, nidx, nums):
        v = to_float32(np.array(values, dtype=np.float64), lambda rows, i=i: _cells(src, rows, i))
        big = np.flatnonzero(np.isinf(v))
        if len(big):
            raise _beyond(src, name, _cells(src, big[:1], i)[0], src.at(int(big[0])))
        columns[name] = v
    for name, values in zip(texts, strs):
        columns[name] = _text_of(np.array(values, dtype=object))
    for name, values in zip(infer, strs[len(tidx):]):
        columns[name] = _inferred(_text_of(np.array(values, dtype=object)), src, name,
                                  lambda row: f":{lines[row]}")
    rows = len(next(iter(nums), None) or next(iter(strs), None) or kept) if (nums or strs or kept) else _count_rows(src)
    return RawTable(header, columns, rows, src, kept if kidx is not None else None)


def _count_rows(src: Source) -> int:
    with _open(src) as f:
        return max(0, sum(1 for _ in _records(f, src)) - 1)


def _text_of(cells: np.ndarray) -> Text:
    """Stripped cells (an object array) as codes into their distinct values; missing tokens → −1."""
    if len(cells) == 0:
        return Text(np.zeros(0, dtype=np.int32), [])
    values, codes = np.unique(cells.astype(str), return_inverse=True)
    return _drop_missing_values(codes.astype(np.int32).reshape(-1), [str(v) for v in values])


def _drop_missing_values(codes: np.ndarray, values: list[str]) -> Text:
    gone = [i for i, v in enumerate(values) if v in MISSING_TOKENS]
    if not gone:
        return Text(codes, values)
    keep = [i for i, v in enumerate(values) if v not in MISSING_TOKENS]
    remap = np.full(len(values), -1, dtype=np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    return Text(remap[codes], [values[i] for i in keep])


def _inferred(t: Text, src: Source, name: str, at) -> Column:
    """A column of unknown type: numbers when every present value is one; a text when most of its distinct
    values are not numbers; otherwise an error at the first cell that is not a number."""
    ok = np.array([_is_number(v, src.decimal) for v in t.values], dtype=bool)
    if ok.all():
        values = np.array([float(v.replace(",", ".") if src.decimal == "," else v) for v in t.values],
                          dtype=np.float64)
        table = np.append(to_float32(values, lambda rows: [t.values[r] for r in rows]), np.float32(np.nan))
        if np.isinf(table).any():
            big = int(np.argmax(np.isinf(table)))
            raise _beyond(src, name, t.values[big], at(int(np.argmax(t.codes == big))))
        return table[t.codes]  # code −1 picks the NaN at the end
    if ok.sum() * 2 >= len(ok):  # mostly numbers: a typo, not a category
        bad = np.flatnonzero(~ok)
        row = int(np.argmax(np.isin(t.codes, bad)))
        cell = t.values[int(t.codes[row])]
        raise DataError(f"{src.where}{at(row)}: column {name!r}: not a number (got {cell!r}); if it is a "
                        f"category, set data.columns.{name}.type: category")
    return t

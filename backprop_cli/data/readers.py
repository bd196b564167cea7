"""Synthetic and CSV data, checked against the model, split, scaled, and served as batches on the device.

Two stages: :func:`read_table` reads and checks the data as numpy arrays without importing torch (so
every data error is reported fast, before torch loads) and returns a :class:`Table`: the training and
validation rows, the column and class names, and the scaling statistics; :func:`load_dataset` turns
it into tensors.

CSV files are read by ``pyarrow.csv`` (multi-threaded, numbers parsed straight to float32, only the columns
used, copied into the C-contiguous feature and target arrays that become tensors without a copy). When it
fails, or meets a missing or non-finite cell, a streaming pyarrow pass finds the record batch where, and
the exact reader (:func:`_read_exact`, Python's ``csv`` module) checks from there to name the line and the
column; small files are read by the exact reader alone (no pyarrow import). Both readers give the same
table (tested).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np

from backprop_cli.config import Config, CsvData, SyntheticData, is_classification, task_of
from backprop_cli.errors import DataError

if TYPE_CHECKING:
    import torch

TEACHER_HIDDEN = 32
# Cells that mean "no value" (pyarrow's defaults, less the exotic ones), compared after stripping spaces.
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "#N/A")
FAST_READER_BYTES = 1 << 20  # files at least this large go through pyarrow; smaller ones through the exact reader
EXACT_BLOCK_ROWS = 1 << 16  # the exact reader turns its numbers into float32 this many rows at a time
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Scaling:
    """z = (v − mean) / std per column, with the training rows' statistics (std 1 where a column is constant:
    it is centred, not divided)."""

    mean: list[float]
    std: list[float]

    def apply(self, a: np.ndarray) -> None:
        """Scale ``a`` (rows, columns) in place."""
        a -= np.asarray(self.mean, dtype=a.dtype)
        a /= np.asarray(self.std, dtype=a.dtype)

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
    """Data as read, before torch: ``x`` (rows, features) float32; ``y`` (rows, outputs) float32, or (rows,)
    int64 class indices for cross_entropy. ``x``/``y`` are the training rows and ``val_x``/``val_y`` the
    validation rows (None without validation), both already scaled when standardizing."""

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
    raw_std: Optional[np.ndarray] = None  # each feature's std over the training rows, before any scaling
    split: Optional[dict] = None  # how the validation rows were chosen (recorded in checkpoints)
    dropped: int = 0  # rows dropped for missing cells (data.missing: drop_rows)

    def info(self) -> dict:
        """What a checkpoint keeps so that evaluate and predict read new data as training did (plain data)."""
        return {"features": list(self.feature_names), "targets": list(self.target_names),
                "classes": None if self.classes is None else list(self.classes),
                "x_scaling": None if self.x_scaling is None else self.x_scaling.plain(),
                "y_scaling": None if self.y_scaling is None else self.y_scaling.plain(),
                "split": None if self.split is None else dict(self.split)}


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


# --------------------------------------------------------------------------- synthetic


def synthetic(spec: SyntheticData, input_size: int, output_size: int, seed: int,
              loss: str = "mse") -> Table:
    """Seeded synthetic data from its own ``torch.Generator`` (independent of the model's init).

    ``random``: ``randn(samples, input_size)`` inputs and ``randn(samples, output_size)`` targets.
    ``teacher``: targets from a fixed random tanh network plus Gaussian noise, so the loss can fall.
    ``classes``: the teacher's (noisy) logits turned into class labels (argmax) for cross_entropy,
    or into 0/1 targets (logit > 0) for bce_with_logits.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    n = spec.samples
    x = torch.randn(n, input_size, generator=g)
    if spec.targets == "random":
        y = torch.randn(n, output_size, generator=g)
    else:
        w1 = torch.randn(input_size, TEACHER_HIDDEN, generator=g) / math.sqrt(input_size)
        w2 = torch.randn(TEACHER_HIDDEN, output_size, generator=g) * (2.0 / math.sqrt(TEACHER_HIDDEN))
        y = torch.tanh(x @ w1) @ w2 + spec.noise * torch.randn(n, output_size, generator=g)
        if spec.targets == "classes":
            y = y.argmax(dim=1) if task_of(loss) == "classes" else (y > 0).float()
    classes = [str(k) for k in range(output_size)] if task_of(loss) == "classes" else None
    return Table(x.numpy(), y.numpy(), f"synthetic ({spec.targets})",
                 [f"x{i}" for i in range(input_size)], [f"y{i}" for i in range(output_size)], classes)


# --------------------------------------------------------------------------- CSV: files and header


def display_path(path: Path) -> str:
    """The path as the user would write it: relative to the current folder when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


def _open(path: Path, key: str):
    """The file as a binary stream, if it is a regular file (one line naming ``key`` otherwise)."""
    from backprop_cli.io.files import open_regular

    try:
        return open_regular(path, "file", DataError)
    except DataError as e:
        raise DataError(f"{e} ({key})") from None


def _text(f, where: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(f, encoding="utf-8-sig", newline="")


def _records(f, where: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of every non-empty record of a binary CSV stream (the header included)."""
    reader = csv.reader(_text(f, where))
    try:
        for cells in reader:
            if cells:  # an empty line
                yield reader.line_num, cells
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{where}:{reader.line_num}: malformed CSV: {e}") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror or e}") from None


def _header(path: Path, where: str, key: str) -> list[str]:
    with _open(path, key) as f:
        first = next(_records(f, where), None)
    if first is None:
        raise DataError(f"{where}: empty file; expected a header row and data rows")
    header = [h.strip() for h in first[1]]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(f"{where}:1: the header has an empty column name")
        if name in seen:
            raise DataError(f"{where}:1: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def _missing_column(where: str, key: str, name: str, header: list[str]) -> DataError:
    hint = ""
    if len(header) == 1 and (sep := next((c for c in ";\t|" if c in header[0]), None)):
        hint = f"; the file seems to separate columns with {sep!r}: backprop reads comma-separated values"
    return DataError(f"{where}: {key}: column {name!r} is not in the header (columns: {', '.join(header)}){hint}")


# --------------------------------------------------------------------------- CSV: columns


@dataclass
class Columns:
    """The used columns of a CSV, rows with missing cells already dropped (when asked to)."""

    numbers: np.ndarray  # (rows, len(numeric)) float32, C-contiguous
    labels: Optional[np.ndarray]  # (rows,) int64 index into ``label_values`` (the label column, when asked)
    label_values: list[str]  # the distinct label texts (stripped)
    kept: Optional[list[str]]  # the ``keep`` column's texts (when asked)
    dropped: int  # rows dropped for missing cells
    source: str
    targets: Optional[np.ndarray] = None  # (rows, len(targets)) float32, C-contiguous (when asked)


def read_columns(path: Path, *, key: str, numeric: list[str], targets: Sequence[str] = (),
                 label: Optional[str] = None, keep: Optional[str] = None, missing: str = "error",
                 header: Optional[list[str]] = None, fast: Optional[bool] = None) -> Columns:
    """Read the named columns of a CSV with a header row. ``numeric``: float32 columns (finite in float32),
    in ``Columns.numbers``; ``targets``: more float32 columns, in their own array ``Columns.targets`` (so
    that neither needs a copy to be contiguous); ``label``: a column of class labels, read as text;
    ``keep``: a column passed through as text.
    ``missing``: ``error`` (name the first missing cell) or ``drop_rows``. Every problem names the file,
    the line and the column. ``fast``: force (True) or avoid (False) the pyarrow reader (default: by size)."""
    where = display_path(path)
    header = header if header is not None else _header(path, where, key)
    targets = list(targets)
    for name in [*numeric, *targets, *([label] if label else []), *([keep] if keep else [])]:
        if name not in header:
            raise _missing_column(where, key, name, header)
    if fast is None:
        try:
            fast = path.stat().st_size >= FAST_READER_BYTES
        except OSError:
            fast = False
    args = (path, where, key, header, numeric, targets, label, keep, missing)
    if fast:
        cols = _read_fast(*args)
        if cols is not None:
            return cols
        # pyarrow refused the file: find the batch of rows where (single-threaded, nothing kept), then let the
        # exact reader check from there, so that a large file's error does not wait for Python to parse
        # every cell before it; it names the problem. Should it find none (it accepts some cells pyarrow
        # refuses, such as ' NA ' with spaces under drop_rows), the whole file is read by the exact reader.
        start = _first_refused_row(*args)
        if start:
            _read_exact(*args, start=start)
    return _read_exact(*args)


def _read_fast(path, where, key, header, numeric, targets, label, keep, missing) -> Optional[Columns]:
    """pyarrow's reader; None when the file has a problem for the exact reader to name.

    Numbers are parsed straight to float32, only the used columns, and copied record batch by record batch
    into the (rows, columns) arrays (a small block transposed in cache), each block checked for non-finite
    values on the way. With ``missing: error`` pyarrow looks for no null tokens (a missing number fails
    the parse, or is NaN, and the exact reader names it); text columns are checked for them here. Arrow
    data reaches numpy through its buffers (:func:`_arrow_floats`), not ``to_numpy``, which imports pandas
    when it is installed."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    texts, names, options = _arrow_options(numeric, targets, label, keep, missing)
    drop = missing == "drop_rows"
    try:
        with _open(path, key) as f:
            table = pacsv.read_csv(_native(f, path), read_options=pacsv.ReadOptions(use_threads=True), **options,
                                   memory_pool=pa.system_memory_pool())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None  # the exact reader names the line and the column
    except MemoryError:
        raise DataError(f"{where}: out of memory reading the file") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror or e}") from None
    rows = table.num_rows
    gaps = np.zeros(rows, dtype=bool)  # rows with a missing cell in a used column
    labels, values = None, []
    for name in texts:
        codes, distinct, gone = _text_codes(table.column(name))
        if gone is not None:
            if not drop:
                return None
            gaps |= gone
        if name == label:
            labels, values = codes, distinct
    nf = len(numeric)
    x = np.empty((rows, nf), dtype=np.float32)
    y = np.empty((rows, len(targets)), dtype=np.float32) if targets else None
    where_in = {n: i for i, n in enumerate(table.column_names)}
    block = np.empty((len(names), 0), dtype=np.float32)
    at = 0
    for batch in table.to_batches():
        n = batch.num_rows
        if block.shape[1] < n:
            block = np.empty((len(names), n), dtype=np.float32)
        for j, name in enumerate(names):
            part = batch.column(where_in[name])
            if name in texts:
                try:
                    part = part.cast(pa.float32())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return None
            numbers, absent = _arrow_floats(part)
            if absent is not None:
                if not drop:
                    return None
                numbers = np.where(absent, np.float32(0), numbers)  # its row is dropped below
                gaps[at:at + n] |= absent
            block[j, :n] = numbers
        b = block[:, :n]
        if not np.isfinite(b).all():
            return None  # inf, NaN, or a value beyond float32's range: the exact reader names it
        x[at:at + n] = b[:nf].T
        if y is not None:
            y[at:at + n] = b[nf:].T
        at += n
    kept = table.column(keep).to_pylist() if keep else None
    del table
    dropped = int(gaps.sum())
    if dropped:
        keep_rows = ~gaps
        x = x[keep_rows]
        y = y[keep_rows] if y is not None else None
        labels = labels[keep_rows] if labels is not None else None
        kept = [k for k, ok in zip(kept, keep_rows) if ok] if kept is not None else None
        if labels is not None:  # only the labels of the rows kept
            present = np.unique(labels)
            values, labels = [values[i] for i in present], np.searchsorted(present, labels)
    return Columns(x, labels, values, kept, dropped, where, targets=y)


def _arrow_options(numeric, targets, label, keep, missing) -> tuple[list[str], list[str], dict]:
    """(text columns, number columns, pyarrow's parse and convert options) for the used columns: numbers as
    float32, the label and kept columns as text. With ``missing: error`` pyarrow looks for no null tokens:
    a missing number fails the parse (or is NaN) and the exact reader names it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    texts = [n for n in dict.fromkeys([label, keep]) if n]
    names = [*numeric, *targets]
    types = {n: pa.float32() for n in names}
    types.update({n: pa.string() for n in texts})  # a kept column that is also a feature is cast to numbers
    used = list(dict.fromkeys([*names, *texts]))
    nulls = list(MISSING_TOKENS) if missing == "drop_rows" else []
    return texts, names, {"parse_options": pacsv.ParseOptions(delimiter=","),
                          "convert_options": pacsv.ConvertOptions(column_types=types, include_columns=used,
                                                                  null_values=nulls, strings_can_be_null=False)}


def _text_codes(col) -> tuple[np.ndarray, list[str], Optional[np.ndarray]]:
    """A text column's cells stripped, as codes (int64) into its distinct texts, and its missing cells (a mask;
    None when there are none)."""
    import pyarrow.compute as pc  # its import costs 0.1 s: only for text columns

    stripped = pc.utf8_trim_whitespace(col)
    if hasattr(stripped, "combine_chunks"):  # a table's column; a record batch's is one array
        stripped = stripped.combine_chunks()
    enc = stripped.dictionary_encode()
    distinct = [str(v) for v in enc.dictionary.to_pylist()]
    codes = _arrow_values(enc.indices, np.int32).astype(np.int64)
    gone = [i for i, v in enumerate(distinct) if v in MISSING_TOKENS]
    return codes, distinct, np.isin(codes, gone) if gone else None


def _first_refused_row(path, where, key, header, numeric, targets, label, keep, missing) -> Optional[int]:
    """The data rows (from 0, empty lines not counted) before the first record batch that holds a cell the
    exact reader would refuse, found by pyarrow's streaming reader: a batch that fails to parse, a number not
    finite in float32, or (``missing: error``) a missing text cell. None when it finds none."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    texts, names, options = _arrow_options(numeric, targets, label, keep, missing)
    at = 0
    try:
        with _open(path, key) as f:
            reader = pacsv.open_csv(_native(f, path), **options, memory_pool=pa.system_memory_pool())
            for batch in reader:
                if missing == "error" and any(_text_codes(batch.column(n))[2] is not None for n in texts):
                    return at
                for name in names:
                    part = batch.column(name)
                    if name in texts:
                        part = part.cast(pa.float32())
                    values, absent = _arrow_floats(part)
                    if not np.isfinite(values[~absent] if absent is not None else values).all():
                        return at
                at += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return at
    except (OSError, MemoryError):
        return None
    return None


def _arrow_values(arr, dtype) -> np.ndarray:
    """The values of a primitive arrow array as a numpy view of its data buffer (null slots hold anything)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _arrow_floats(arr) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A float32 arrow array's values and, when it has any, its missing cells (a bool mask), read from its
    buffers."""
    values = _arrow_values(arr, np.float32)
    if not arr.null_count:
        return values, None
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
    return values, bits[arr.offset:arr.offset + len(arr)] == 0


def _arrow_missing(col) -> np.ndarray:
    """The missing cells of a chunked arrow column of any type, as a bool mask (from its validity bitmaps)."""
    parts = []
    for chunk in col.chunks:
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(chunk.buffers()[0], dtype=np.uint8), bitorder="little")
            parts.append(bits[chunk.offset:chunk.offset + len(chunk)] == 0)
        else:
            parts.append(np.zeros(len(chunk), dtype=bool))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _native(f, path: Path) -> str:
    """A path pyarrow opens itself for the file already opened (and checked) as ``f``: its own reader is
    several times faster than reading through a Python file object. On Linux ``/proc/self/fd/N`` names
    exactly the file that was checked."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else str(path)


def _is_missing(cell: str) -> bool:
    return cell.strip() in MISSING_TOKENS


def _number(cell: str, where: str, line: int, column: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise DataError(f"{where}:{line}: column {column!r}: not a number (got {cell.strip()!r})") from None
    if not math.isfinite(v):
        raise DataError(f"{where}:{line}: column {column!r}: not a finite number (got {cell.strip()!r})")
    if abs(v) > FLOAT32_MAX:
        raise DataError(f"{where}:{line}: column {column!r}: {cell.strip()} is beyond float32's range "
                        f"(±{FLOAT32_MAX:.4g}), the precision the model computes in")
    return v


def _read_exact(path, where, key, header, numeric, targets, label, keep, missing, start: int = 0) -> Optional[Columns]:
    """Python's csv module, streaming: every cell checked, every problem named by line and column. The
    numbers go into float32 blocks of :data:`EXACT_BLOCK_ROWS` rows as they come, the labels into codes, so
    that memory stays near the result's size whatever the file's (this reader also runs on a large file
    that pyarrow refused, to name its problem).

    ``start`` > 0: only look for the first problem from that data row on (the rows before it were checked
    by pyarrow), keep nothing, and return None if there is none."""
    col = {name: i for i, name in enumerate(header)}
    nidx = [col[n] for n in [*numeric, *targets]]
    lidx = col[label] if label else None
    kidx = col[keep] if keep else None
    checked = [*nidx, *([lidx] if lidx is not None else []), *([kidx] if kidx is not None else [])]
    width = len(header)
    blocks: list[np.ndarray] = []
    values: list[list[float]] = []
    codes: list[int] = []
    label_index: dict[str, int] = {}
    kept: list[str] = []
    dropped = 0
    with _open(path, key) as f:
        records = _records(f, where)
        next(records, None)  # the header
        for row, (line, cells) in enumerate(records):
            if row < start:
                continue
            if len(cells) != width:
                raise DataError(f"{where}:{line}: row has {len(cells)} cells, the header has {width}")
            gap = next((i for i in checked if _is_missing(cells[i])), None)
            if gap is not None:
                if missing == "drop_rows":
                    dropped += 1
                    continue
                raise DataError(f"{where}:{line}: column {header[gap]!r}: missing value (got {cells[gap].strip()!r}); "
                                "set data.missing: drop_rows to skip rows with missing cells")
            if start:
                for i in nidx:
                    _number(cells[i], where, line, header[i])
                continue
            values.append([_number(cells[i], where, line, header[i]) for i in nidx])
            if len(values) == EXACT_BLOCK_ROWS:
                blocks.append(np.array(values, dtype=np.float32))
                values = []
            if lidx is not None:
                codes.append(label_index.setdefault(cells[lidx].strip(), len(label_index)))
            if kidx is not None:
                kept.append(cells[kidx])
    if start:
        return None
    blocks.append(np.array(values, dtype=np.float32).reshape(len(values), len(nidx)))
    del values
    nf = len(numeric)
    x, y = np.concatenate([b[:, :nf] for b in blocks]), np.concatenate([b[:, nf:] for b in blocks])
    labels = np.array(codes, dtype=np.int64) if lidx is not None else None
    return Columns(x, labels, list(label_index), kept if kidx is not None else None, dropped, where,
                   targets=y if targets else None)


def find_line(path: Path, column: str, test: Callable[[str], bool], key: str = "data.path") -> Optional[int]:
    """The line of the first data row whose cell in ``column`` passes ``test`` (None: no such row)."""
    where = display_path(path)
    with _open(path, key) as f:
        records = _records(f, where)
        first = next(records, None)
        if first is None:
            return None
        header = [h.strip() for h in first[1]]
        i = header.index(column)
        for line, cells in records:
            if i < len(cells) and test(cells[i]):
                return line
    return None


@dataclass
class Survey:
    """What ``init --csv`` needs to know about a CSV: which columns hold numbers, how many rows have
    missing cells, and the distinct values of one column."""

    header: list[str]
    numeric: list[str]  # columns whose every present cell is a finite number
    rows: int
    missing_by_row: Callable[[list[str]], int]  # rows with a missing cell in any of these columns
    distinct: list[str]  # distinct texts of the surveyed column (at most ``cap``; more means "many")


def survey(path: Path, column_index: Callable[[list[str]], int], key: str = "--csv", cap: int = 1000) -> Survey:
    """One pass over a CSV (pyarrow for large files, the exact reader for small ones)."""
    where = display_path(path)
    header = _header(path, where, key)
    col = column_index(header)
    try:
        fast = path.stat().st_size >= FAST_READER_BYTES
    except OSError:
        fast = False
    if fast:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        try:
            with _open(path, key) as f:
                table = pacsv.read_csv(_native(f, path), convert_options=pacsv.ConvertOptions(
                    null_values=list(MISSING_TOKENS), strings_can_be_null=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
            fast = False  # the exact reader names the problem
        else:
            numeric = [n for n, t in zip(table.column_names, table.schema.types)
                       if pa.types.is_integer(t) or pa.types.is_floating(t)]
            masks = {n: _arrow_missing(table.column(n)) for n in table.column_names}
            target = table.column(col).cast(pa.string())
            distinct = [str(v).strip() for v in pc.unique(target.drop_null()).to_pylist()[:cap + 1]]
            rows = table.num_rows

            def missing_fast(names: list[str]) -> int:
                m = np.zeros(rows, dtype=bool)
                for n in names:
                    m |= masks[n]
                return int(m.sum())

            return Survey(header, numeric, rows, missing_fast, sorted(set(distinct) - {""}))
    width = len(header)
    is_number = [True] * width
    gaps: list[set] = [set() for _ in range(width)]
    values: set[str] = set()
    rows = 0
    with _open(path, key) as f:
        records = _records(f, where)
        next(records, None)
        for line, cells in records:
            if len(cells) != width:
                raise DataError(f"{where}:{line}: row has {len(cells)} cells, the header has {width}")
            for j, cell in enumerate(cells):
                if _is_missing(cell):
                    gaps[j].add(rows)
                elif is_number[j]:
                    try:
                        is_number[j] = math.isfinite(float(cell))
                    except ValueError:
                        is_number[j] = False
            if len(values) <= cap and not _is_missing(cells[col]):
                values.add(cells[col].strip())
            rows += 1

    def missing_exact(names: list[str]) -> int:
        return len(set().union(*(gaps[header.index(n)] for n in names))) if names else 0

    return Survey(header, [h for h, ok in zip(header, is_number) if ok], rows, missing_exact, sorted(values))


# --------------------------------------------------------------------------- class labels


def _label_key(text: str) -> Optional[float]:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def class_name(text: str) -> str:
    """How a label is named: integers as integers (``1.0`` and ``1`` are the class ``1``), others as written."""
    v = _label_key(text)
    if v is not None and v == int(v):
        return str(int(v))
    return text


def order_classes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct classes of some label texts, and where each text goes (index into the classes).

    All numbers: sorted by value, equal values one class (``1`` and ``1.0``); otherwise sorted as text."""
    keys = [_label_key(v) for v in values]
    numeric = all(k is not None for k in keys)
    names = [class_name(v) for v in values] if numeric else list(values)
    if numeric:
        order = sorted(set(zip(keys, names)), key=lambda kn: kn[0])
        distinct = list(dict.fromkeys(name for _, name in order))
    else:
        distinct = sorted(set(names))
    index = {name: i for i, name in enumerate(distinct)}
    return distinct, np.array([index[n] for n in names], dtype=np.int64)


def labels_to_classes(cols: Columns, where: str, path: Path, column: str,
                      known: Optional[list[str]] = None, key: str = "data.path") -> tuple[np.ndarray, list[str]]:
    """Class indices of the label column, and the class names. ``known``: the classes a model was trained
    on (evaluate); a label outside them is an error naming its line."""
    if known is None:
        names, remap = order_classes(cols.label_values)
        return remap[cols.labels] if len(remap) else np.zeros(0, dtype=np.int64), names
    index = {name: i for i, name in enumerate(known)}
    remap = np.empty(len(cols.label_values), dtype=np.int64)
    for j, text in enumerate(cols.label_values):
        name = class_name(text)
        if name not in index:
            line = find_line(path, column, lambda c, t=text: c.strip() == t, key)
            at = f":{line}" if line else ""
            raise DataError(f"{where}{at}: column {column!r}: class {text!r} is not one the model was trained on "
                            f"(classes: {', '.join(known)})")
        remap[j] = index[name]
    return remap[cols.labels] if len(remap) else np.zeros(0, dtype=np.int64), list(known)


# --------------------------------------------------------------------------- the configured data


def load_csv(path: Path, spec: CsvData, loss: str = "mse", *, features: Optional[list[str]] = None,
             classes: Optional[list[str]] = None, key: str = "data.path", fast: Optional[bool] = None) -> Table:
    """A CSV as a Table (all rows, unscaled). ``features``/``classes``: the columns and classes to expect
    (a validation file must match the training file)."""
    where = display_path(path)
    header = _header(path, where, key)
    targets = spec.target_columns
    if features is None:
        features = spec.features if spec.features is not None else [h for h in header if h not in targets]
    for k, names in (("data.target", targets), ("data.features", features)):
        for name in names:
            if name not in header:
                raise _missing_column(where, k if key == "data.path" else key, name, header)
    overlap = sorted(set(targets) & set(features))
    if overlap:
        raise DataError(f"{where}: data.features: column {overlap[0]!r} is also a target")
    if not features:
        raise DataError(f"{where}: data.features: no feature columns left besides the target")
    if task_of(loss) == "classes" and len(targets) != 1:
        raise DataError(f"{where}: data.target: cross_entropy takes one column of class labels (got {len(targets)})")
    label = targets[0] if task_of(loss) == "classes" else None
    cols = read_columns(path, key=key, numeric=list(features), targets=[] if label else list(targets), label=label,
                        missing=spec.missing, header=header, fast=fast)
    if cols.numbers.shape[0] == 0:
        why = " (every row has a missing cell)" if cols.dropped else ""
        raise DataError(f"{where}: no data rows after the header{why}")
    x = cols.numbers
    names = None
    if label:
        y, names = labels_to_classes(cols, where, path, label, classes, key)
    else:
        y = cols.targets
    return Table(x, y, where, list(features), list(targets), names, dropped=cols.dropped)


def read_table(cfg: Config) -> Table:
    """The configured data, read, split, scaled and checked against the model and the loss (no torch for CSV)."""
    loss = cfg.loss.name
    spec = cfg.data
    if isinstance(spec, SyntheticData):
        table = synthetic(spec, cfg.model.input_size, cfg.model.output_size, cfg.split_seed, loss)
    else:
        table = load_csv(cfg.data_path(), spec, loss)
    val_table = None
    vpath = cfg.validation_path()
    if vpath is not None:
        val_table = load_csv(vpath, spec, loss, features=table.feature_names,
                             classes=table.classes, key="data.validation")
        _same_columns(table, val_table, vpath)
    table = split_and_scale(table, cfg, val_table)
    check_fits(cfg, table)
    return table


def _same_columns(train: Table, val: Table, vpath: Path) -> None:
    if val.feature_names != train.feature_names or val.target_names != train.target_names:
        raise DataError(f"{val.source}: data.validation: the validation file must have the training file's "
                        f"columns ({', '.join(train.feature_names + train.target_names)})")


def split_rows(n: int, fraction: float, seed: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """The sorted indices of the validation rows: ``round(fraction × rows)`` of each stratum (class), chosen
    by a seeded hash of the row index (splitmix64), so the split depends only on the seed and the data,
    and on no library's random-number generator."""
    with np.errstate(over="ignore"):
        offset = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    order = np.argsort(_splitmix64(np.arange(n, dtype=np.uint64) + offset), kind="stable")
    if strata is None:
        chosen = order[:int(round(fraction * n))]
    else:
        s = strata[order]
        picks = []
        for k in np.unique(s):
            members = order[s == k]
            picks.append(members[:int(round(fraction * len(members)))])
        chosen = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    return np.sort(chosen)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def column_stats(a: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each column, in float64, a chunk of rows at a time (no full-size copy)."""
    n = a.shape[0]
    if n == 0:
        return np.zeros(a.shape[1]), np.zeros(a.shape[1])
    shift = a[0].astype(np.float64)
    s = np.zeros(a.shape[1])
    sq = np.zeros(a.shape[1])
    for lo in range(0, n, chunk):
        d = a[lo:lo + chunk].astype(np.float64) - shift
        s += d.sum(axis=0)
        sq += (d * d).sum(axis=0)
    mean = s / n
    var = np.maximum(sq / n - mean * mean, 0.0)
    return mean + shift, np.sqrt(var)


def _scaling(a: np.ndarray) -> tuple[Scaling, np.ndarray]:
    mean, std = column_stats(a)
    safe = np.where(std > 0, std, 1.0)
    return Scaling([float(v) for v in mean], [float(v) for v in safe]), std


def split_and_scale(table: Table, cfg: Config, val_table: Optional[Table] = None) -> Table:
    """Hold out the validation rows (``data.validation``), then standardize with the training rows' statistics."""
    spec, loss = cfg.data, cfg.loss.name
    fraction = spec.validation if isinstance(spec.validation, float) else None
    x, y = table.x, table.y
    val_x = val_y = None
    split = None
    if val_table is not None:
        val_x, val_y = val_table.x, val_table.y
        split = {"validation": "file", "path": val_table.source, "rows": int(val_table.samples)}
        table.val_source = val_table.source
    elif fraction is not None:
        n = table.samples
        strata = None
        if task_of(loss) == "classes":
            strata = y
        elif task_of(loss) == "binary" and y.ndim == 2 and y.shape[1] == 1:
            strata = (y[:, 0] > 0.5).astype(np.int64)
        rows = split_rows(n, fraction, cfg.split_seed, strata)
        if len(rows) == 0:
            raise DataError(f"{table.source}: data.validation: {fraction:g} of {n} rows leaves no validation rows; "
                            "raise the fraction")
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        val_x, val_y = x[mask], y[mask]
        x, y = x[~mask], y[~mask]
        split = {"validation": fraction, "seed": cfg.split_seed, "rows": n, "validation_rows": int(len(rows)),
                 "stratified": strata is not None, "digest": _digest(rows)}
        table.val_source = f"{len(rows)} of {n} rows of {table.source} ({fraction:g}, seed {cfg.split_seed}" \
                           + (", stratified by class)" if strata is not None else ")")
    if x.shape[0] == 0:
        raise DataError(f"{table.source}: data.validation leaves no training rows")
    x_scaling, raw_std = _scaling(x)
    table.raw_std = raw_std
    # x and y are the reader's own arrays (or fresh copies made by the split): scaled in place
    if spec.standardize:
        for part in (x, val_x):
            if part is not None:
                x_scaling.apply(part)
        table.x_scaling = x_scaling
    if spec.standardize_target:
        y_scaling, _ = _scaling(y)
        for part in (y, val_y):
            if part is not None:
                y_scaling.apply(part)
        table.y_scaling = y_scaling
    table.x, table.y, table.val_x, table.val_y, table.split = x, y, val_x, val_y, split
    return table


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
        raise DataError(f"{ds.source}: the data has {nfeat} feature columns but model.input_size is "
                        f"{m.input_size}; set model.input_size: {nfeat}")
    if task_of(loss) == "classes":
        k = len(ds.classes) if ds.classes is not None else int(ds.y.max()) + 1
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


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def batches_per_epoch(samples: int, batch_size: int, drop_last: bool = False) -> int:
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)


class Batches:
    """Batch ``k`` of the run, from tensors already on the device.

    Each epoch is one pass over the data in order (``shuffle: false``: batch k is rows k·B … (k+1)·B−1,
    the last batch may be smaller, or is left out with ``drop_last``) or in a seeded permutation that
    depends only on (seed, epoch), so any step's batch can be recomputed, e.g. on resume.

    When one batch holds the whole data set, every step is an epoch: the permutations of the next
    epochs are drawn together and their rows gathered in one go (8 epochs first, twice as many each
    time after, up to :data:`PREFETCH_ELEMENTS` gathered elements), so a step only takes a view. The
    order is exactly the one epoch by epoch would give.
    """

    PREFETCH_ELEMENTS = 1 << 18  # gathered elements (x and y) per prefetch of whole-data epochs

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.samples = x.shape[0]
        self.per_epoch = batches_per_epoch(self.samples, batch_size, drop_last)
        self._epoch = -1
        self._ex, self._ey = x, y
        row = max(1, x[:1].numel() + y[:1].numel())
        self._most = max(1, self.PREFETCH_ELEMENTS // (row * self.samples))  # epochs per prefetch, at most
        self._ahead = 4
        self._first, self._xs, self._ys = 0, (), ()  # prefetched whole-data epochs _first, _first + 1, ...
        self._generator = None

    def rows(self, k: int) -> int:
        """Rows in batch ``k`` of an epoch (from 0)."""
        return min(self.batch_size, self.samples - k * self.batch_size)

    def order(self, epoch: int):
        import torch

        if self._generator is None:
            self._generator = torch.Generator()
        return torch.randperm(self.samples, generator=self._generator.manual_seed(epoch_seed(self.seed, epoch)))

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch used by step ``index + 1`` (index counts from 0)."""
        if self.per_epoch == 1 and self.batch_size >= self.samples:  # one batch is the whole data set
            if not self.shuffle:
                return self.x, self.y
            j = index - self._first
            if not 0 <= j < len(self._xs):
                self._prefetch(index)
                j = 0
            return self._xs[j], self._ys[j]
        epoch, k = divmod(index, self.per_epoch)
        if self.shuffle and epoch != self._epoch:
            perm = _to_device(self.order(epoch), self.x.device)
            self._ex, self._ey, self._epoch = self.x[perm], self.y[perm], epoch
        lo = k * self.batch_size
        return self._ex[lo:lo + self.batch_size], self._ey[lo:lo + self.batch_size]

    def _prefetch(self, first: int) -> None:
        """Whole-data epochs ``first … first + _ahead − 1``: one gather of x and y for all of them."""
        import torch

        self._ahead = min(2 * self._ahead, self._most)
        perms = torch.cat([self.order(e) for e in range(first, first + self._ahead)])
        perms = _to_device(perms, self.x.device)
        xs = self.x[perms].view(self._ahead, self.samples, *self.x.shape[1:])
        ys = self.y[perms].view(self._ahead, self.samples, *self.y.shape[1:])
        self._first, self._xs, self._ys = first, xs.unbind(0), ys.unbind(0)


def _to_device(t, device):
    """A host tensor on ``device``. To CUDA it goes from pinned memory without blocking: a plain copy
    from pageable memory would make the host wait for the device (a sync at every epoch start)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

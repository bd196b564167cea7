"""The fast path of text files: pyarrow's CSV reader (multi-threaded, only the columns used), and the arrow
helpers the Parquet reader shares. It gives the exact reader's table or gives up (None) and lets the exact
reader name the problem; what makes the two agree is in ``readers.py``'s docstring.

Number columns are parsed by pyarrow straight to float32 (one rounding from the text, as
:func:`readers.to_float32` rounds) and copied record batch by record batch into one row-major matrix (the
``block`` columns, in the order asked), so that an all-number input needs no further copy; text columns are
stripped and dictionary-encoded. A column to infer is read as float32 until pyarrow refuses it, then as text
(and :func:`readers._inferred` decides, as the exact reader does)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from backprop_cli.data.readers import (MISSING_TOKENS, STRIP, Column, RawTable, Source, Text, _drop_missing_values,
                                       _inferred, _open, header_lines, table_array)
from backprop_cli.errors import DataError

_COLUMN = re.compile(r"In CSV column #(\d+)")


def read_fast(src: Source, header, numbers, texts, infer, keep, block=()) -> Optional[RawTable]:
    """pyarrow's CSV reader; None when it refuses the file (the exact reader names the problem). ``block``: number
    columns to place side by side in one row-major float32 matrix (``RawTable.block``), in this order."""
    import pyarrow as pa

    strings = list(dict.fromkeys([*texts, *([keep] if keep else [])]))
    if keep and (keep in numbers or keep in infer):
        return None  # a kept column that is also read as a number: the exact reader reads it both ways
    as_text = set(strings)
    skip = header_lines(src)
    try:
        for _ in range(len(infer) + 2):
            types = {n: pa.string() if n in as_text else pa.float32() for n in [*numbers, *infer, *strings]}
            table, refused = _arrow_csv(src, header, skip, types)
            if table is not None:
                break
            if refused is None or refused not in infer or refused in as_text:
                return None
            if len(as_text) == len(strings):  # the first text column among those to infer: all of them at once
                as_text |= _sniffed_texts(src, header, skip, infer)
            as_text.add(refused)
        else:
            return None
    except MemoryError:
        raise DataError(f"{src.where}: out of memory reading the file") from None
    floats = [n for n in [*numbers, *infer] if n not in as_text]
    inblock = [n for n in block if n in floats]
    columns = float_columns(table, floats, inblock)
    if columns is None:
        return None
    matrix = columns.pop("\0block", None)
    for name in texts:
        columns[name] = arrow_text(table.column(name))
    for name in infer:
        if name in as_text:
            columns[name] = _inferred(arrow_text(table.column(name)), src, name, src.at)
    kept = [str(v) for v in table.column(keep).to_pylist()] if keep else None
    rows = table.num_rows
    del table
    raw = RawTable(header, columns, rows, src, kept)
    if inblock:
        raw.block = (inblock, matrix)
    return raw


def _options(src: Source, header, skip: int, types: Optional[dict], used):
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(use_threads=True, column_names=list(header), skip_rows=skip)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(used), null_values=list(MISSING_TOKENS),
                                   strings_can_be_null=False, decimal_point=src.decimal)
    return read, pacsv.ParseOptions(delimiter=src.delimiter), convert


def _arrow_csv(src: Source, header, skip: int, types: dict):
    """(the table, None), or (None, the column pyarrow refused a cell of, when it says which)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read, parse, convert = _options(src, header, skip, types, types)
    try:
        with _open(src) as f:
            stream = pa.input_stream(native(f, src.path), compression=src.compression)
            return pacsv.read_csv(stream, read_options=read, parse_options=parse, convert_options=convert,
                                  memory_pool=pa.system_memory_pool()), None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as e:
        m = _COLUMN.search(str(e))
        return None, header[int(m.group(1))] if m and int(m.group(1)) < len(header) else None
    except OSError as e:
        if src.compression:
            return None, None
        raise DataError(f"{src.where}: cannot read: {e.strerror or e}") from None


def _sniffed_texts(src: Source, header, skip: int, infer) -> set[str]:
    """The columns to infer that pyarrow's type inference on the first block of rows finds not to be numbers."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read, parse, convert = _options(src, header, skip, None, infer)
    try:
        with _open(src) as f:
            stream = pa.input_stream(native(f, src.path), compression=src.compression)
            schema = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert).schema
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError):
        return set()
    return {f.name for f in schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                                          or pa.types.is_null(f.type))}


def float_columns(table, names, block) -> Optional[dict[str, Column]]:
    """The float32 columns ``names`` as numpy, NaN where a cell is missing: the ``block`` ones side by side in one
    row-major matrix (under the key ``"\\0block"``; each column a view of it), the others one array each. None if
    a value is not finite (inf, or beyond float32's range: the exact reader names it)."""
    rows = table.num_rows
    matrix = table_array((rows, len(block)))
    alone = {n: np.empty(rows, dtype=np.float32) for n in names if n not in block}
    order = [*block, *alone]
    part = np.empty((len(order), 0), dtype=np.float32)
    at = 0
    for batch in table.select(order).to_batches():
        n = batch.num_rows
        if part.shape[1] < n:
            part = np.empty((len(order), n), dtype=np.float32)
        b = part[:, :n]
        gaps = []
        for j in range(len(order)):
            arr = batch.column(j)
            b[j] = arrow_values(arr, np.float32)
            if arr.null_count:
                absent = arrow_absent(arr)
                b[j, absent] = 0
                gaps.append((j, absent))
        if not np.isfinite(b).all():
            return None
        for j, absent in gaps:
            b[j, absent] = np.nan
        matrix[at:at + n] = b[:len(block)].T
        for j, name in enumerate(alone, start=len(block)):
            alone[name][at:at + n] = b[j]
        at += n
    out: dict[str, Column] = {name: matrix[:, j] for j, name in enumerate(block)}
    out.update(alone)
    out["\0block"] = matrix
    return out


def arrow_values(arr, dtype) -> np.ndarray:
    """The values of a primitive arrow array as a numpy view of its data buffer (null slots hold anything)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def arrow_absent(arr) -> np.ndarray:
    """An arrow array's null slots, as a bool mask."""
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)] == 0


def arrow_text(col) -> Text:
    """A string arrow column stripped of :data:`readers.STRIP`, as codes into its distinct values in sorted order
    (missing tokens and nulls: −1), as the exact reader codes it."""
    import pyarrow as pa
    import pyarrow.compute as pc  # its import costs 0.1 s: only for text columns

    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    stripped = pc.utf8_trim(col, characters=STRIP)
    if hasattr(stripped, "combine_chunks"):
        stripped = stripped.combine_chunks()
    enc = stripped.dictionary_encode()
    values = [str(v) for v in enc.dictionary.to_pylist()]
    codes = arrow_values(enc.indices, np.int32).astype(np.int32)
    if enc.indices.null_count:
        codes = np.where(arrow_absent(enc.indices), np.int32(-1), codes)
    # the same codes whatever the reader: distinct values in sorted order
    order = np.argsort(np.array(values, dtype=object).astype(str), kind="stable") if values else np.zeros(0, int)
    rank = np.empty(len(values) + 1, dtype=np.int32)
    rank[order] = np.arange(len(values), dtype=np.int32)
    rank[-1] = -1
    return _drop_missing_values(rank[codes], [values[i] for i in order])


def native(f, path: Path) -> str:
    """A path pyarrow opens itself for the file already opened (and checked) as ``f``: its own reader is
    several times faster than reading through a Python file object. On Linux ``/proc/self/fd/N`` names
    exactly the file that was checked."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else str(path)

"""Parquet files (pyarrow): numbers (integer, floating, boolean, decimal) as float32, strings as texts; a
nested or binary column is refused in one line. The same table as CSV gives the same columns (tested)."""

from __future__ import annotations

import numpy as np

from backprop_cli.data.arrowcsv import arrow_text as _arrow_text
from backprop_cli.data.arrowcsv import native as _native
from backprop_cli.data.readers import FLOAT32_LIMIT, Column, RawTable, Source, Text, _inferred, _open, table_array
from backprop_cli.errors import DataError


def parquet_file(src: Source):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = _open(src)
    try:
        return pq.ParquetFile(_native(f, src.path)), f
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        f.close()
        raise DataError(f"{src.where}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None



def read_parquet(src: Source, header, numbers, texts, infer, keep, block=()) -> RawTable:
    """A Parquet file's columns: numbers (integer, floating, boolean) as float32, strings as texts. A nested or
    binary column is refused with one line."""
    import pyarrow as pa

    used = list(dict.fromkeys([*numbers, *texts, *infer, *([keep] if keep else [])]))
    pf, f = parquet_file(src)
    with f:
        _refuse_types(pf.schema_arrow, used, src)
        try:
            table = pf.read(columns=used, use_threads=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, MemoryError) as e:
            raise DataError(f"{src.where}: cannot read the Parquet file ({str(e).splitlines()[0][:120]})") from None
    return arrow_columns(table, src, header, numbers, texts, infer, keep, block)


def _refuse_types(schema, used, src: Source) -> None:
    import pyarrow as pa

    for name in used:
        t = schema.field(name).type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) \
                or pa.types.is_fixed_size_binary(t):
            raise DataError(f"{src.where}: column {name!r}: Parquet type {t} is not supported (nested or "
                            "binary); store numbers or text")


def arrow_columns(table, src: Source, header, numbers, texts, infer, keep, block=()) -> RawTable:
    """The named columns of a pyarrow Table (a Parquet file's, or one given in memory: backprop_cli.load), as
    read_raw returns them; every name must be in ``header``. ``block``: the number columns to place side by side
    in one row-major matrix (``RawTable.block``), as the fast CSV reader does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _refuse_types(table.schema, list(dict.fromkeys([*numbers, *texts, *infer, *([keep] if keep else [])])), src)
    columns: dict[str, Column] = {}
    formats = {}
    for name in [*numbers, *texts, *infer]:
        c = table.column(name)
        formats[name] = str(c.type)
        numeric = pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_decimal(c.type) \
            or pa.types.is_boolean(c.type)
        if name in texts:
            columns[name] = _arrow_text(_integral_text(c))
        elif numeric:
            wide = c.cast(pa.float64())
            top = pc.max(pc.abs(wide)).as_py()  # nulls skipped; NaN is missing
            if top is not None and not top < FLOAT32_LIMIT and not np.isnan(top):  # inf, or inf in float32
                values = wide.to_numpy(zero_copy_only=False)
                bad = int(np.flatnonzero(np.abs(np.nan_to_num(values, nan=0.0)) >= FLOAT32_LIMIT)[0])
                raise DataError(f"{src.where}{src.at(bad)}: column {name!r}: {values[bad]} is not a finite float32 "
                                "number")
            columns[name] = wide.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)  # null: NaN
        elif name in numbers:
            t = _inferred(_arrow_text(c), src, name, src.at)
            if isinstance(t, Text):
                row = int(np.argmax(t.codes >= 0))
                raise DataError(f"{src.where}{src.at(row)}: column {name!r}: not a number (got "
                                f"{t.values[int(t.codes[row])]!r}; Parquet type {c.type})")
            columns[name] = t
        else:
            columns[name] = _inferred(_arrow_text(c), src, name, src.at)
    kept = [str(v) for v in table.column(keep).to_pylist()] if keep else None
    raw = RawTable(header, columns, table.num_rows, src, kept, formats)
    inblock = [n for n in block if isinstance(columns.get(n), np.ndarray)]
    if inblock:
        matrix = table_array((table.num_rows, len(inblock)))
        for j, name in enumerate(inblock):
            matrix[:, j] = columns[name]
            columns[name] = matrix[:, j]
        raw.block = (inblock, matrix)
    return raw


def _integral_text(col):
    """A Parquet column read as text: integers as written (``3``), floats that are integers too (``3.0`` → ``3``,
    as a CSV file would most likely write them)."""
    import pyarrow as pa

    if pa.types.is_floating(col.type):
        values = col.to_numpy(zero_copy_only=False)
        ok = np.isfinite(values)
        if ok.any() and np.all(values[ok] == np.round(values[ok])):
            return col.cast(pa.int64(), safe=False).cast(pa.string())
    return col.cast(pa.string())

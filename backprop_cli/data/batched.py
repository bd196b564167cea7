"""A table file's columns a batch of rows at a time (``predict``): memory bounded by a batch, not by the file.

A Parquet file is read by ``pyarrow.parquet.ParquetFile.iter_batches``, a large text file (at least
``readers.FAST_READER_BYTES``) by ``pyarrow.csv.open_csv``, pyarrow's streaming CSV reader, with the options
of the fast reader (``arrowcsv._arrow_csv``); each batch becomes a :class:`~backprop_cli.data.readers.RawTable`
whose source names the file's own rows (``at(row)`` is the row in the file, not in the batch). A small text
file is one batch of the exact reader. When pyarrow refuses the file at some batch (a cell that is not a
number, a row with another cell count, a header pyarrow spells otherwise), the exact reader reads it whole,
which names the line and the column of the problem, or, where the readers disagree, gives the rest of the
rows: the same table either way, only its memory is then the whole file's.
"""

from __future__ import annotations

from collections.abc import Iterator

from backprop_cli.data.arrowcsv import arrow_text, float_columns
from backprop_cli.data.arrowcsv import native as _native
from backprop_cli.data.readers import (
    FAST_READER_BYTES,
    MISSING_TOKENS,
    RawTable,
    Source,
    Text,
    _open,
    missing_column,
    read_header,
    read_raw,
)
from backprop_cli.errors import DataError

BLOCK_BYTES = 1 << 22  # the text a batch of pyarrow's streaming reader holds (4 MiB: ~100,000 rows of a narrow file)


class Offset:
    """A Source seen from row ``start`` on: row ``i`` of a batch is row ``start + i`` of the file."""

    def __init__(self, src: Source, start: int):
        self.src, self.start = src, start

    def at(self, row: int) -> str:
        return self.src.at(self.start + int(row))

    def __getattr__(self, name):
        return getattr(self.src, name)


def raw_batches(src: Source, *, numbers: list[str], texts: list[str], keep: str | None = None,
                batch_rows: int = 65_536, stream: bool | None = None,
                block_bytes: int = BLOCK_BYTES) -> Iterator[RawTable]:
    """The named columns of ``src`` (as :func:`readers.read_raw` reads them), a batch of rows at a time, in
    order. ``stream``: force (True) or avoid (False) pyarrow's streaming readers (default: Parquet, and text
    files of at least ``FAST_READER_BYTES``)."""
    header = read_header(src)
    for name in [*numbers, *texts, *([keep] if keep else [])]:
        if name not in header:
            raise missing_column(src, src.key, name, header)
    if stream is None:
        try:
            stream = src.format == "parquet" or src.path.stat().st_size >= FAST_READER_BYTES
        except OSError:
            stream = False
    if not stream:
        yield read_raw(src, numbers=numbers, texts=texts, keep=keep, header=header)
        return
    if src.format == "parquet":
        yield from _parquet_batches(src, header, numbers, texts, keep, batch_rows)
        return
    done = 0
    for raw in _text_batches(src, header, numbers, texts, keep, block_bytes):
        if raw is None:  # pyarrow refused the file here: the exact reader names the problem, or reads the rest
            whole = read_raw(src, numbers=numbers, texts=texts, keep=keep, header=header, fast=False)
            for lo in range(done, whole.rows, batch_rows):
                yield rows_of(whole, lo, min(lo + batch_rows, whole.rows))
            return
        done += raw.rows
        yield raw


def rows_of(raw: RawTable, lo: int, hi: int) -> RawTable:
    columns = {name: Text(c.codes[lo:hi], c.values) if isinstance(c, Text) else c[lo:hi]
               for name, c in raw.columns.items()}
    return RawTable(raw.header, columns, hi - lo, Offset(raw.source, lo),
                    raw.kept[lo:hi] if raw.kept is not None else None, raw.formats)


def _parquet_batches(src: Source, header, numbers, texts, keep, batch_rows) -> Iterator[RawTable]:
    import pyarrow as pa

    from backprop_cli.data.parquet import _refuse_types, arrow_columns, parquet_file

    used = list(dict.fromkeys([*numbers, *texts, *([keep] if keep else [])]))
    pf, f = parquet_file(src)
    with f:
        _refuse_types(pf.schema_arrow, used, src)
        start = 0
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=used, use_threads=True):
                table = pa.Table.from_batches([batch])
                yield arrow_columns(table, Offset(src, start), header, numbers, texts, [], keep)
                start += table.num_rows
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, MemoryError) as e:
            raise DataError(f"{src.where}: cannot read the Parquet file ({str(e).splitlines()[0][:120]})") from None
    if start == 0:
        yield RawTable(header, {}, 0, src, [] if keep else None)


def _text_batches(src: Source, header, numbers, texts, keep, block_bytes) -> Iterator[RawTable | None]:
    """The text file's batches through pyarrow's streaming reader; a None where it refuses the file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = _arrow_header(src, block_bytes)
    if names is None or [n.strip() for n in names] != header:
        yield None
        return
    spelled = dict(zip(header, names))  # the header as pyarrow reads it (item 1's "a, b, y": unstripped)
    strings = [*texts, *([keep] if keep else [])]
    types = {spelled[n]: pa.float32() for n in numbers}
    types.update({spelled[n]: pa.string() for n in strings})
    convert = pacsv.ConvertOptions(column_types=types, include_columns=[spelled[n] for n in dict.fromkeys(
        [*numbers, *strings])], null_values=list(MISSING_TOKENS), strings_can_be_null=False,
        decimal_point=src.decimal)
    start = 0
    with _open(src) as f:
        try:
            reader = pacsv.open_csv(pa.input_stream(_native(f, src.path), compression=src.compression),
                                    read_options=pacsv.ReadOptions(use_threads=True, block_size=block_bytes),
                                    parse_options=pacsv.ParseOptions(delimiter=src.delimiter),
                                    convert_options=convert, memory_pool=pa.system_memory_pool())
            batches = iter(reader)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                raw = _raw_of(batch, spelled, header, numbers, texts, keep, Offset(src, start))
                if raw is None:
                    yield None
                    return
                start += raw.rows
                yield raw
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError):
            yield None
            return
    if start == 0:
        yield RawTable(header, {}, 0, src, [] if keep else None)


def _arrow_header(src: Source, block_bytes: int) -> list[str] | None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with _open(src) as f:
        try:
            reader = pacsv.open_csv(pa.input_stream(_native(f, src.path), compression=src.compression),
                                    read_options=pacsv.ReadOptions(use_threads=False, block_size=min(block_bytes,
                                                                                                     1 << 16)),
                                    parse_options=pacsv.ParseOptions(delimiter=src.delimiter),
                                    convert_options=pacsv.ConvertOptions(include_columns=[]))
            return list(reader.schema.names)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError):
            return None


def _raw_of(batch, spelled, header, numbers, texts, keep, src) -> RawTable | None:
    """One record batch's columns as the fast reader gives them; None if a number is not finite in float32
    (the exact reader names it)."""
    import pyarrow as pa

    floats = float_columns(pa.Table.from_batches([batch]), [spelled[n] for n in numbers], ())
    if floats is None:
        return None
    columns = {name: floats[spelled[name]] for name in numbers}
    for name in texts:
        columns[name] = arrow_text(batch.column(spelled[name]))
    kept = [str(v) for v in batch.column(spelled[keep]).to_pylist()] if keep else None
    return RawTable(header, columns, batch.num_rows, src, kept)


"""``predict``'s output, written a batch of rows at a time: CSV, JSON (a streamed array) or JSON Lines. No torch.

CSV cells are data, never markup: a text cell (a class name, a kept id, a column name) has its control
characters written as Python escapes (``\\x1b[2J``, ``\\n``), so one record is one line, and a text that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-`` or ``@``, and not a number) gets a
leading ``'`` (OWASP's advice for CSV injection); a number, ``-1.5`` or ``+3``, stays as it is. JSON keeps
every name as it is (JSON escapes control characters itself).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable, Iterator

FORMULA_PREFIXES = ("=", "+", "-", "@")  # what a spreadsheet reads as the start of a formula


def escaped(text: str) -> str:
    """``text`` with every non-printable character (C0 and C1 controls, DEL, line and paragraph separators,
    bidirectional overrides, lone surrogates) as its Python escape; a backslash stays one backslash."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def csv_text(text: str) -> str:
    """A text cell of predict's CSV: escaped (:func:`escaped`), and prefixed with ``'`` when a spreadsheet
    would read it as a formula and it is not a number."""
    text = escaped(text)
    if text.startswith(FORMULA_PREFIXES):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.7g}" if math.isfinite(v) else ""
    if isinstance(v, int):
        return str(v)
    return csv_text(str(v))


def _plain(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _csv_column(col: list) -> list[str]:
    """One column's cells as text, column-wise: the common cases (finite floats, integers, plain texts)
    without a call per cell."""
    kinds = set(map(type, col))
    if kinds == {float} and all(map(math.isfinite, col)):
        return [f"{v:.7g}" for v in col]
    if kinds == {int}:
        return list(map(str, col))
    if kinds == {str}:
        return [t if t.isprintable() and not t.startswith(FORMULA_PREFIXES) else csv_text(t) for t in col]
    return list(map(_cell, col))


def predictions_chunks(header: list[str], batches: Iterable[list[list]], fmt: str) -> Iterator[str]:
    """``predict``'s output as text, one chunk per batch (a batch: a list of columns, each a list of values):
    ``csv`` (a header row, then one row per input row; numbers with 7 significant digits, an empty cell for
    a non-finite one); ``json``: ``{"columns": [...], "predictions": [{column: value}, ...]}``, the array
    written one object per line as the rows come; ``jsonl`` (JSON Lines): one ``{column: value}`` object per
    line. A non-finite number is ``null`` in JSON."""
    if fmt in ("json", "jsonl"):
        first = True
        if fmt == "json":
            yield '{"columns": ' + json.dumps(list(header)) + ', "predictions": ['
        encode = json.JSONEncoder(allow_nan=False).encode
        for columns in batches:
            columns = [list(map(_plain, col)) if set(map(type, col)) <= {float, int} and not all(
                map(math.isfinite, col)) else col for col in columns]
            lines = [encode(dict(zip(header, row))) for row in zip(*columns)]
            if not lines:
                continue
            if fmt == "jsonl":
                yield "".join(line + "\n" for line in lines)
            else:
                yield ("\n" if first else ",\n") + ",\n".join(lines)
            first = False
        if fmt == "json":
            yield ("" if first else "\n") + "]}\n"
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_text(h) for h in header])
    for columns in batches:
        w.writerows(zip(*map(_csv_column, columns)))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def predictions_text(header: list[str], rows: list[list], fmt: str) -> str:
    """``predict``'s whole output as one text, from rows (see :func:`predictions_chunks`)."""
    return "".join(predictions_chunks(header, [[list(c) for c in zip(*rows)] or [[] for _ in header]], fmt))

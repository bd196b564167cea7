"""The metrics file, written: one record per logged step, as JSON Lines or CSV (the same keys), appended
atomically record by record.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

from backprop_cli.errors import OutputError
from backprop_cli.io.atomic import AtomicFile
from backprop_cli.io.paths import METRICS_SUFFIXES, check_writable


class MetricsWriter:
    """Step records as JSON Lines (``.jsonl``) or CSV (``.csv``).

    JSONL: one object per line with keys ``step, loss, grad_norm, grad_norms, lr, time`` plus any
    ``extra`` fields (and the nested diagnostics of logging steps), exactly as ``json.dumps`` writes it.
    CSV: the same, ``grad_norms`` flattened to one ``grad_norms.NAME`` column per parameter, and one
    column per ``nested`` key path (``activations.layer1.mean``, ``update_ratios.layer1.weight``: the
    path's keys joined by dots), empty where a record has no value. Non-finite numbers are written as
    null (JSON) or ``nan``/``inf`` (CSV). Records are kept and encoded :data:`BATCH` at a time (one
    write each); the file appears (atomically) when the writer is closed. Any failure to write is one
    OutputError naming the path and the cause; the previous file stays and no temporary file is left.
    """

    BATCH = 1024

    def __init__(self, path: Path, param_names: list[str], extra: tuple[str, ...] = (),
                 nested: tuple[tuple[str, ...], ...] = ()):
        self.path = check_writable(path, METRICS_SUFFIXES, "metrics")
        self.csv = self.path.suffix.lower() == ".csv"
        self.names = list(param_names)
        self.extra = tuple(extra)
        self.nested = tuple(nested)
        self.failed: OutputError | None = None
        self._out = AtomicFile(self.path)
        self._pending: list[dict] = []
        self._json = JsonLines()
        if self.csv:
            self._csv = csv.writer(self._out.file, lineterminator="\n")
            self._guarded(self._csv.writerow, ["step", *self.extra, "loss", "grad_norm",
                                                *(f"grad_norms.{n}" for n in self.names), "lr", "time",
                                                *(".".join(keys) for keys in self.nested)])

    def _guarded(self, write: Callable, *args) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            write(*args)
        except OSError as e:
            self._out.discard()
            self.failed = self._out._error(e)
            raise self.failed from None

    def write(self, record: dict) -> None:
        """Add one record (written with the next batch); a failed write (disk full) discards the file
        (the previous one stays) and raises OutputError."""
        if self.failed is not None:
            raise self.failed
        self._pending.append(record)
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        """Encode and write the records kept so far (one write)."""
        pending, self._pending = self._pending, []
        if pending:
            self._guarded(self._write, pending)

    def _write(self, pending: list[dict]) -> None:
        if self.csv:
            extra, names, nested = self.extra, self.names, self.nested
            self._csv.writerows([[r["step"], *(r.get(k, "") for k in extra), _num(r["loss"]), _num(r["grad_norm"]),
                                  *(_num(r["grad_norms"][n]) for n in names), _num(r["lr"]), _num(r["time"]),
                                  *(_cell(_at(r, keys)) for keys in nested)]
                                 for r in pending])
        else:
            self._out.file.write("".join(map(self._json.line, pending)))

    def close(self) -> None:
        """Put the file in place (OutputError if it cannot be, or if a write failed before)."""
        self.flush()
        if self.failed is not None:
            raise self.failed
        try:
            self._out.commit()
        except OutputError as e:
            self.failed = e
            raise

    def abort(self) -> None:
        self._pending = []
        self._out.discard()


def _num(v: float) -> str:
    return repr(float(v))


class JsonLines:
    """Records as JSON Lines, byte for byte what ``json.dumps(record) + "\\n"`` writes, except that a
    non-finite number is written as null. benchmarks/bench_metrics.py times it against json.dumps.

    Records of one shape (the same keys, value types and ``grad_norms`` names: every step of a run)
    share one %-template built on first sight, filled with the numbers' ``repr`` (what json writes
    for a float or an int); a record with a non-finite number, or any other value, takes
    :func:`json_value`.
    """

    def __init__(self) -> None:
        self._templates: dict[tuple, tuple[str, int] | None] = {}

    def line(self, record: dict) -> str:
        values = list(record.values())
        inner = record.get("grad_norms")
        shape = (tuple(record), tuple(map(type, values)),
                 (tuple(inner), tuple(map(type, inner.values()))) if type(inner) is dict else None)
        plan = self._templates.get(shape, False)
        if plan is False:
            plan = self._templates[shape] = _template(record)
        if plan is not None:
            template, at = plan
            if at >= 0:
                values[at:at + 1] = inner.values()
            total = sum(values)
            if total - total == 0:  # every number finite (an overflowing sum only takes the slow path)
                return template % tuple(values)
        return json_value(record) + "\n"


def _template(record: dict) -> tuple[str, int] | None:
    """The %-template of records shaped like this one: numbers only, and ``grad_norms`` a dict of
    numbers whose values are spliced in at the returned index (-1: no such key); None otherwise."""
    parts, at = [], -1
    for i, (k, v) in enumerate(record.items()):
        if type(v) in (int, float):
            parts.append(_key(k).replace("%", "%%") + "%r")
        elif k == "grad_norms" and type(v) is dict and all(type(x) in (int, float) for x in v.values()):
            at = i
            parts.append(_key(k).replace("%", "%%") + "{"
                         + ", ".join(_key(n).replace("%", "%%") + "%r" for n in v) + "}")
        else:
            return None
    return "{" + ", ".join(parts) + "}\n", at


_KEYS: dict[tuple, str] = {}


def _key(k) -> str:
    text = _KEYS.get((type(k), k))
    if text is None:
        text = _KEYS[type(k), k] = json.dumps({k: 0})[1:-4] + ": "  # json's own key conversion and escaping
    return text


def json_value(v) -> str:
    """``json.dumps(v)``, with every non-finite number (also inside dicts and lists) written as null
    (what ``json.dumps(documents.finite(v))`` writes)."""
    t = type(v)
    if t is float:
        return float.__repr__(v) if v - v == 0 else "null"
    if t is int:
        return int.__repr__(v)
    if t is dict:
        return "{" + ", ".join([_key(k) + json_value(x) for k, x in v.items()]) + "}"
    if t is list or t is tuple:
        return "[" + ", ".join(map(json_value, v)) + "]"
    if isinstance(v, float):  # a subclass (numpy's float64): json writes it as a float
        return float.__repr__(v) if v - v == 0 else "null"
    if isinstance(v, dict):
        return json_value(dict(v))
    if isinstance(v, (list, tuple)):
        return json_value(list(v))
    return json.dumps(v)


def _at(record: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _cell(v) -> str:
    return "" if v is None else _num(v)

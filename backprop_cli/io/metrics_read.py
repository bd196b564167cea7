"""The metrics file, read back (plot): untrusted, bounded in bytes and records, every record checked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backprop_cli.errors import DataError
from backprop_cli.io.files import read_bytes_capped
from backprop_cli.io.paths import METRICS_SUFFIXES
from backprop_cli.limits import MAX_COUNT

MAX_METRICS_BYTES = 256 * 2**20  # plot reads at most this much of a metrics file (about a million records)


MAX_TEXT = 200  # the longest text value of a record (an optimizer's label)


MAX_SERIES = 1000  # distinct parameter (or layer) names under one key: one line each in a dashboard panel


PER_PARAMETER = ("grad_norms", "grad_to_weight", "update_ratios")  # CSV: KEY.<parameter name>


PER_LAYER = ("activations",)  # CSV: KEY.<layer>.<statistic>


STEP_NUMBERS = ("loss", "val_loss")  # a record of ours has a step and at least one of these


@dataclass
class MetricsFile:
    """The records read from a metrics file, and where reading stopped early (``None``: read whole)."""

    records: list[dict]
    stopped: Optional[str] = None  # "FILE:LINE: why" of the first line that is not one of our records


def load_metrics(path: Path) -> MetricsFile:
    """Read a metrics file (``.jsonl`` or ``.csv``, from ``train`` or ``compare-optimizers``) into records
    shaped like the JSONL ones, as far as it is readable: reading stops at the first line that is not one of
    our records (a truncated last line, another file appended) and says which. Nothing readable at all
    (not a metrics file, empty, unreadable): :class:`DataError`, one line."""
    path = Path(path)
    if path.suffix.lower() not in METRICS_SUFFIXES:
        raise DataError(f"{path}: a metrics file ends in .jsonl or .csv (got {path.suffix or 'no extension'!r})")
    # a regular file (not a FIFO, not /dev/zero), of which at most MAX_METRICS_BYTES are read
    # utf-8-sig: a byte-order mark (a file saved by a spreadsheet or an editor on Windows) is not text
    text = read_bytes_capped(path, MAX_METRICS_BYTES, "metrics file", DataError).decode("utf-8-sig", errors="replace")
    records, stopped = (_jsonl_records if path.suffix.lower() == ".jsonl" else _csv_records)(text)
    if not records:
        why = stopped or "no records"
        raise DataError(f"{path}: not a backprop metrics file ({why})")
    for head in (*PER_PARAMETER, *PER_LAYER):  # linear in the records and their names
        series = {name for rec in records if isinstance(rec.get(head), dict) for name in rec[head]}
        if len(series) > MAX_SERIES:  # each is a line of a dashboard panel: 20,000 took minutes and 780 MB
            raise DataError(f"{path}: {len(series):,} {head} series, more than the {MAX_SERIES:,} a panel of the "
                            "dashboard draws (a net of at most 500 layers)")
    return MetricsFile(records, f"{path}:{stopped}" if stopped else None)


def read_metrics(path: Path) -> list[dict]:
    """Every record of a metrics file; any unreadable line is an error (:class:`DataError`)."""
    got = load_metrics(path)
    if got.stopped:
        raise DataError(got.stopped)
    return got.records


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _value_problem(key: str, v, depth: int = 0) -> Optional[str]:
    """What makes a record's value unusable: an integer past int64 (no float holds it for a plot), a
    text longer than MAX_TEXT, a list, or mappings nested deeper than ours."""
    if v is None or isinstance(v, (bool, float)):
        return None
    if isinstance(v, int):
        return None if abs(v) <= 2**63 else f"'{key}' is a number out of range"
    if isinstance(v, str):
        return None if len(v) <= MAX_TEXT else f"'{key}' is a text of {len(v):,} characters"
    if isinstance(v, dict) and depth < 2:
        for k, x in v.items():
            problem = _value_problem(f"{key}.{_shown(k)}", x, depth + 1)
            if problem:
                return problem
        return None
    return f"'{key}' is not a number, a short text or a mapping of them"


def _shown(key: str) -> str:
    return key if len(key) <= 40 else key[:37] + "..."


def _record_problem(rec) -> Optional[str]:
    if not isinstance(rec, dict):
        return f"not a JSON object (got {type(rec).__name__})"
    step = rec.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_COUNT:
        return f"no integer 'step' from 0 to {MAX_COUNT} (got {_shown(repr(step))})"
    if not any(k in rec and _is_number(rec[k]) for k in STEP_NUMBERS):
        return "no 'loss' number"
    for key in PER_PARAMETER:
        if key in rec and not (isinstance(rec[key], dict) and all(map(_is_number, rec[key].values()))):
            return f"'{key}' is not a mapping of numbers"
    if "activations" in rec and not (isinstance(rec["activations"], dict) and all(
            isinstance(v, dict) and all(map(_is_number, v.values())) for v in rec["activations"].values())):
        return "'activations' is not a mapping of layers to numbers"
    for key, value in rec.items():
        problem = _value_problem(_shown(key), value)
        if problem:
            return problem
    return None


def _jsonl_records(text: str) -> tuple[list[dict], Optional[str]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            return records, f"{number}: not valid JSON ({e.msg}{', truncated?' if 'Unterminated' in e.msg or 'Expecting' in e.msg else ''})"
        except ValueError:  # an integer of over 4,300 digits: Python will not convert it
            return records, f"{number}: not a metrics record: a number too long to read"
        except RecursionError:
            return records, f"{number}: not a metrics record: nested too deeply"
        problem = _record_problem(rec)
        if problem:
            return records, f"{number}: not a metrics record: {problem}"
        records.append(rec)
    return records, None


def _csv_value(column: str, cell: str):
    if cell == "":
        return None
    if column in ("step", "seed", "epoch"):
        return int(cell)
    if cell in ("True", "False"):
        return cell == "True"
    try:
        return float(cell)
    except ValueError:
        if column in ("optimizer", "label"):
            return cell
        raise


def _csv_records(text: str) -> tuple[list[dict], Optional[str]]:
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows)
    except (StopIteration, csv.Error) as e:
        return [], f"1: {'empty' if isinstance(e, StopIteration) else e}"
    if "step" not in header or not any(k in header for k in STEP_NUMBERS):
        return [], f"1: the header has no 'step' and 'loss' columns (got {','.join(header)[:80]!r})"
    records = []
    while True:
        number = rows.line_num + 1
        try:
            row = next(rows)
        except StopIteration:
            return records, None
        except csv.Error as e:
            return records, f"{number}: not a CSV row ({e})"
        if not row:
            continue
        if len(row) != len(header):
            return records, f"{rows.line_num}: {len(row)} cells where the header has {len(header)} (truncated?)"
        rec: dict = {}
        try:
            for column, cell in zip(header, row):
                value = _csv_value(column, cell)
                head, _, rest = column.partition(".")
                if head in PER_PARAMETER and rest:
                    if value is not None or head == "grad_norms":
                        rec.setdefault(head, {})[rest] = value
                elif head in PER_LAYER and rest:
                    layer, _, stat = rest.rpartition(".")
                    if value is not None:
                        rec.setdefault(head, {}).setdefault(layer, {})[stat] = value
                elif value is not None:
                    rec[column] = value
        except ValueError:
            return records, f"{rows.line_num}: column {column!r}: not a number (got {cell[:40]!r})"
        problem = _record_problem(rec)
        if problem:
            return records, f"{rows.line_num}: not a metrics record: {problem}"
        records.append(rec)

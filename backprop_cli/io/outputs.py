"""Output files that are never half-written: temp file in the same folder, fsync, os.replace."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional

from backprop_cli.errors import DataError, OutputError
from backprop_cli.io.files import file_kind, read_bytes_capped
from backprop_cli.limits import MAX_COUNT
from backprop_cli.io.signals import deferred, forget, remove_on_interrupt

METRICS_SUFFIXES = (".jsonl", ".csv")
DUMP_SUFFIXES = (".pt", ".npz", ".json")  # inspect-grads --out
PLOT_SUFFIXES = (".png", ".svg")
# Each file option of the CLI: (the suffixes it may end in, or None; what it is called in messages)
OUTPUT_KINDS = {"--metrics": (METRICS_SUFFIXES, "metrics"), "--save": (None, "checkpoint"),
                "--save-best": (None, "checkpoint"), "--plot": (PLOT_SUFFIXES, "plot"),
                "--out": (DUMP_SUFFIXES, "gradient dump")}


def check_writable(path: Path, suffixes: tuple[str, ...] | None = None, what: str = "output") -> Path:
    """Fail early (before any work) if ``path`` cannot be written or has the wrong extension.

    An output is a regular file or a new path: a directory, FIFO, device or socket (or a symlink to
    one) is refused, never replaced.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: {what} file must end in {' or '.join(suffixes)} (got {path.suffix or 'no extension'!r})")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    refuse_special(path, what)
    parent = _target(path).parent
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: folder {str(parent)!r} is not writable")
    return path


def check_folder(path: Path, what: str = "output folder") -> Path:
    """Fail early if ``path`` cannot be the folder of an output: an existing file (or device), or a
    path whose nearest existing folder cannot be written."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise OutputError(f"{path}: is {kind}, not a folder; the {what} must be a folder or a new path")
    existing = path if mode is not None else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"{path}: cannot create the {what} under {str(existing)!r}")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{path}: folder {str(existing)!r} is not writable")
    return path


def refuse_special(path: Path, what: str = "output") -> None:
    """Raise OutputError if ``path`` exists and is not a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # a new path (or a dangling symlink: its target is written as a regular file)
    except OSError as e:  # a symlink loop, a folder we may not search, ...
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path}: is {file_kind(mode)}, not a regular file; the {what} is written only to "
                          "a regular file or a new path")


def _target(path: Path) -> Path:
    """Where writing ``path`` lands: a symlink's target (the link itself is kept), else the path."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse (OutputError, exit 2) an output that is the same file as an input or as another output.

    Keys name the role as the user gave it (``"--save"``, ``"--config"``, ``"data.path"``); ``None``
    values are skipped. Paths are compared resolved (symlinks and ``..`` followed), and by inode where
    both exist (hard links): ``--save s.yaml: is the same file as --config s.yaml; choose another path``.
    Call it before any work.
    """
    seen: list[tuple[str, Path]] = [(role, Path(p)) for role, p in inputs.items() if p is not None]
    for role, p in outputs.items():
        if p is None:
            continue
        for other_role, other in seen:
            if _same_file(Path(p), other):
                raise OutputError(f"{role} {p}: is the same file as {other_role} {other}; choose another path")
        seen.append((role, Path(p)))


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _mode_for(path: Path) -> int:
    """The existing file's permissions, else what a plain open() would give (0o666 less the umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class AtomicFile:
    """A file written under a temporary name and renamed over ``path`` on :meth:`commit`.

    :meth:`discard` (or an exception inside ``with``) leaves the previous file untouched and no
    temporary file behind. Any OSError while creating, writing, flushing, fsyncing or renaming is an
    OutputError naming the path and the cause (``m.jsonl: cannot write: No space left on device``),
    also when a library (torch.save's zip writer) hides the OSError behind an error of its own. A
    symlink is written through (its target is replaced, the link kept); a path that is not a regular
    file (a device, FIFO or socket) is never replaced.
    """

    def __init__(self, path: Path, mode: str = "w"):
        self.path = Path(path)
        self.done = False
        self.target = _target(self.path)
        refuse_special(self.path)
        with deferred():  # an interrupted process removes the temporary file (signals.py)
            try:
                fd, self.tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp",
                                                dir=self.target.parent)
            except OSError as e:
                raise self._error(e) from None
            remove_on_interrupt(self.tmp)
            try:
                os.chmod(self.tmp, _mode_for(self.target))
                raw = os.fdopen(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {}))
            except OSError as e:
                os.close(fd)
                os.unlink(self.tmp)
                forget(self.tmp)
                raise self._error(e) from None
            self.file: IO = _Recording(raw)

    def _error(self, e: OSError) -> OutputError:
        return OutputError(f"{self.path}: cannot write: {e.strerror or e}")

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        with deferred():  # a signal now waits until the file is in place, or removed
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                refuse_special(self.path)  # it may have become one while we wrote
                os.replace(self.tmp, self.target)
                forget(self.tmp)
            except OSError as e:
                self._cleanup()
                raise self._error(e) from None
            except BaseException:
                self._cleanup()
                raise

    def discard(self) -> None:
        if not self.done:
            self.done = True
            self._cleanup()

    def _cleanup(self) -> None:
        with deferred():
            try:
                self.file.close()
            except OSError:
                pass  # the buffered rest could not be written: the file is being removed anyway
            finally:
                if os.path.exists(self.tmp):
                    os.unlink(self.tmp)
                forget(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        cause = self.file.error or (exc if isinstance(exc, OSError) else None)
        if cause is not None and isinstance(exc, Exception) and not isinstance(exc, OutputError):
            raise self._error(cause) from None


class _Recording:
    """A file that remembers the first OSError its writes met: torch.save's zip writer (and other
    libraries) turn a failed write into an error of their own ("unexpected pos ..."), which does
    not tell the user that the disk is full."""

    def __init__(self, file: IO):
        self._file = file
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def write_atomic(path: Path, write: Callable[[IO], None], mode: str = "w") -> None:
    """Write a whole file with ``write(f)``; the previous file survives any failure."""
    with AtomicFile(path, mode) as f:
        write(f.file)


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


# --------------------------------------------------------------------------- reading metrics back

MAX_METRICS_BYTES = 256 * 2**20  # plot reads at most this much of a metrics file (about a million records)
MAX_TEXT = 200  # the longest text value of a record (an optimizer's label)
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
    text = read_bytes_capped(path, MAX_METRICS_BYTES, "metrics file", DataError).decode("utf-8", errors="replace")
    records, stopped = (_jsonl_records if path.suffix.lower() == ".jsonl" else _csv_records)(text)
    if not records:
        why = stopped or "no records"
        raise DataError(f"{path}: not a backprop metrics file ({why})")
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

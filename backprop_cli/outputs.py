"""Output files that are never half-written: temp file in the same folder, fsync, os.replace."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

from backprop_cli.errors import OutputError

METRICS_SUFFIXES = (".jsonl", ".csv")
DUMP_SUFFIXES = (".pt", ".npz", ".json")  # inspect-grads --out


def check_writable(path: Path, suffixes: tuple[str, ...] | None = None, what: str = "output") -> Path:
    """Fail early (before any work) if ``path`` cannot be written or has the wrong extension."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: {what} file must end in {' or '.join(suffixes)} (got {path.suffix or 'no extension'!r})")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: folder {str(parent)!r} is not writable")
    return path


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

    :meth:`discard` (or an exception inside ``with``) leaves the previous file untouched.
    """

    def __init__(self, path: Path, mode: str = "w"):
        self.path = Path(path)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent or ".")
        os.chmod(self.tmp, _mode_for(self.path))
        self.file: IO = os.fdopen(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {}))
        self.done = False

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self._cleanup()
            raise OutputError(f"{self.path}: cannot write: {e.strerror or e}") from None

    def discard(self) -> None:
        if not self.done:
            self.done = True
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.file.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: Path, write: Callable[[IO], None], mode: str = "w") -> None:
    """Write a whole file with ``write(f)``; the previous file survives any failure."""
    with AtomicFile(path, mode) as f:
        write(f.file)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


class MetricsWriter:
    """Step records as JSON Lines (``.jsonl``) or CSV (``.csv``).

    JSONL: one object per line with keys ``step, loss, grad_norm, grad_norms, lr, time`` plus any
    ``extra`` fields. CSV: the same, ``grad_norms`` flattened to one ``grad_norms.NAME`` column per
    parameter. Non-finite numbers are written as null (JSON) or ``nan``/``inf`` (CSV).
    The file appears (atomically) when the writer is closed.
    """

    def __init__(self, path: Path, param_names: list[str], extra: tuple[str, ...] = ()):
        self.path = check_writable(path, METRICS_SUFFIXES, "metrics")
        self.csv = self.path.suffix.lower() == ".csv"
        self.names = list(param_names)
        self.extra = tuple(extra)
        self._out = AtomicFile(self.path)
        if self.csv:
            self._csv = csv.writer(self._out.file, lineterminator="\n")
            self._csv.writerow(["step", *self.extra, "loss", "grad_norm",
                                *(f"grad_norms.{n}" for n in self.names), "lr", "time"])

    def write(self, record: dict) -> None:
        if self.csv:
            norms = record["grad_norms"]
            self._csv.writerow([record["step"], *(record.get(k, "") for k in self.extra),
                                _num(record["loss"]), _num(record["grad_norm"]),
                                *(_num(norms[n]) for n in self.names), _num(record["lr"]), _num(record["time"])])
        else:
            rec = dict(record)
            for k in ("loss", "grad_norm", "lr", "time"):
                rec[k] = _finite(rec[k])
            rec["grad_norms"] = {k: _finite(v) for k, v in rec["grad_norms"].items()}
            self._out.file.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self._out.commit()

    def abort(self) -> None:
        self._out.discard()


def _num(v: float) -> str:
    return repr(float(v))


def read_metrics(path: Path) -> list[dict]:
    """Read a metrics file back (JSONL or CSV) into records shaped like the JSONL ones."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    out = []
    for row in rows:
        rec: dict = {"grad_norms": {}}
        for k, v in row.items():
            if k.startswith("grad_norms."):
                rec["grad_norms"][k[len("grad_norms."):]] = float(v)
            elif k == "step":
                rec[k] = int(v)
            elif k in ("loss", "grad_norm", "lr", "time"):
                rec[k] = float(v)
            else:
                rec[k] = v
        out.append(rec)
    return out

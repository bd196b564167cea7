"""exercise check: run a learner's ``backward`` in a separate process and hold it against autograd.

This process never imports torch: runs/exercise_worker.py draws the inputs, computes autograd's reference
(exercises/judge.py), runs the learner's file with a time limit and judges each gradient; here the answer
is read back, and a file that cannot be checked becomes one :class:`ExerciseFileError`. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from backprop_cli.errors import BackpropError
from backprop_cli.exercises import EXERCISES, Exercise, sizes_text

TIME_LIMIT_S = 10.0  # for the learner's code (their file's import and the three backward calls)
KILL_GRACE_S = 60.0  # beyond that the worker is killed (a loop the time limit could not stop; torch's import)
NAME_LINE = re.compile(r"""^EXERCISE\s*=\s*["']([A-Za-z_]+)["']""", re.M)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class ExerciseFileError(BackpropError):
    """The learner's file cannot be checked: one line, plus their own traceback (``details``)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def exercise_of(path: Path, name: Optional[str] = None) -> Exercise:
    """Which exercise a file is: ``name`` if given, else its ``EXERCISE = "..."`` line, else its file name."""
    if name is None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise BackpropError(f"{path}: cannot read it ({e.strerror or e})") from None
        m = NAME_LINE.search(text)
        name = m.group(1) if m else path.stem
    if name not in EXERCISES:
        raise BackpropError(f"{path}: no exercise {name!r} (set EXERCISE = \"NAME\" in the file, or give --exercise "
                            f"NAME; there are {', '.join(EXERCISES)})")
    return EXERCISES[name]


def _case(e: Exercise, i) -> str:
    return "" if i is None else " on " + ", ".join(f"{k}={v}" for k, v in e.cases[i].items())


def _problem(path: Path, e: Exercise, st: dict, limit: float) -> str:
    where = _case(e, st.get("case"))
    kind = st["kind"]
    if kind == "import":
        return f"{path}: the file fails when it is imported: {st['message']} (its traceback below)"
    if kind == "no_backward":
        return (f"{path}: {st['message']}; write `def backward({', '.join(e.args)}):` (`backprop exercise start "
                f"{e.name}` writes a file to fill in)")
    if kind == "raises":
        return f"{path}: backward raised {st['message']}{where} (its traceback below)"
    if kind == "count":
        return f"{path}: backward {st['message']}{where}; {e.name}'s backward returns {len(e.grads)} ({', '.join(e.grads)})"
    if kind == "type":
        return f"{path}: backward {st['message']}{where}; return torch tensors ({', '.join(e.grads)})"
    return (f"{path}: backward did not finish within the time limit ({limit:g} s){where}: an infinite loop? "
            "(where it was, below)")


def check_file(path: Path, name: Optional[str] = None, limit: float = TIME_LIMIT_S) -> dict:
    """Everything ``exercise check`` shows, as plain data (raises ExerciseFileError for a bad file)."""
    e = exercise_of(path, name)
    with tempfile.TemporaryDirectory(prefix="backprop-exercise-") as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "backprop_cli.runs.exercise_worker", e.name, str(path.resolve()), repr(limit), out]
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + KILL_GRACE_S, env=env,
                               cwd=str(path.resolve().parent), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ExerciseFileError(f"{path}: backward did not finish within the time limit ({limit:g} s) and "
                                    "did not stop when asked: an infinite loop?") from None
        if not os.path.exists(out):
            tail = "\n".join(r.stderr.strip().splitlines()[-8:])
            raise ExerciseFileError(f"{path}: the process running it ended without an answer (exit code "
                                    f"{r.returncode})", tail)
        with open(out, encoding="utf-8") as f:
            st = json.load(f)
    if st["status"] != "ok":  # the traceback names the file as the learner gave it
        tb = st.get("traceback", "").replace(f'File "{path.resolve()}"', f'File "{path}"')
        raise ExerciseFileError(_problem(path, e, st, limit), tb)
    result = st["result"]
    result.update({"exercise": e.name, "file": str(path), "sizes": sizes_text(e), "printed": r.stdout,
                   "solution": e.solution})
    return result

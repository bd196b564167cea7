"""The process that runs a learner's ``backward`` for ``exercise check`` (started by runs/exercise.py).

    python -m backprop_cli.runs.exercise_worker NAME FILE LIMIT_S RESULT.json

The inputs and autograd's reference gradients are made first; then the learner's file is imported as
they wrote it (its folder first on sys.path) and ``backward`` is called on clones of each case's inputs;
then each answer is judged. The learner's code gets LIMIT_S seconds in all, after which a TimeLimit is
raised where it runs (so its traceback shows the loop); the parent kills the process if even that does
not end it.

RESULT.json: ``{"status": "ok", "result": {...}}`` (exercises.judge.judge), or ``{"status": "error", "kind":
"import" | "no_backward" | "raises" | "count" | "type" | "timeout", "case": i or null, "message", "traceback"}``
with the traceback trimmed to the learner's own file.
"""

import importlib.util
import json
import os
import signal
import sys
import traceback


class TimeLimit(BaseException):
    """Raised in the learner's code when the time is up (a BaseException: ``except Exception`` in their
    code does not swallow it)."""


def trimmed(exc: BaseException, file: str) -> str:
    """The traceback of ``exc`` with only the frames in the learner's file (and the exception itself)."""
    mine = os.path.realpath(file)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.realpath(f.filename) == mine]
    lines = ["Traceback (your file's frames):\n"] if frames else []
    lines += traceback.format_list(frames)
    if isinstance(exc, TimeLimit):
        lines.append("(stopped here: the time limit)\n")
    else:
        lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def _error(kind: str, case, message: str = "", tb: str = "") -> dict:
    return {"status": "error", "kind": kind, "case": case, "message": message, "traceback": tb}


def run(name: str, file: str, limit: float) -> dict:
    import torch

    from backprop_cli.exercises import EXERCISES
    from backprop_cli.exercises.judge import cases_of, judge, reference

    torch.set_num_threads(1)
    e = EXERCISES[name]
    cases = cases_of(e)
    refs = [reference(e, inputs) for inputs in cases]  # before any of the learner's code runs

    def on_alarm(signum, frame):
        raise TimeLimit()

    signal.signal(signal.SIGALRM, on_alarm)
    sys.path.insert(0, os.path.dirname(os.path.abspath(file)))
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        try:
            spec = importlib.util.spec_from_file_location("learner_exercise", file)
            module = importlib.util.module_from_spec(spec)
            sys.modules["learner_exercise"] = module
            spec.loader.exec_module(module)
        except TimeLimit as exc:
            return _error("timeout", None, tb=trimmed(exc, file))
        except BaseException as exc:  # anything their file raises: ImportError, SyntaxError, SystemExit, ...
            return _error("import", None, f"{type(exc).__name__}: {exc}", trimmed(exc, file))
        backward = getattr(module, "backward", None)
        if not callable(backward):
            return _error("no_backward", None, "defines no function `backward`" if backward is None else
                          f"`backward` is a {type(backward).__name__}, not a function")
        got = []
        for i, args in enumerate(cases):
            try:
                result = backward(*[a.clone() for a in args])
            except TimeLimit as exc:
                return _error("timeout", i, tb=trimmed(exc, file))
            except BaseException as exc:
                return _error("raises", i, f"{type(exc).__name__}: {exc}", trimmed(exc, file))
            values = [result] if isinstance(result, torch.Tensor) or result is None else result
            if not isinstance(values, (tuple, list)):
                return _error("type", i, f"returned a {type(result).__name__}, not torch tensors")
            if len(values) != len(e.grads):
                return _error("count", i, f"returned {len(values)} value{'s' if len(values) != 1 else ''}")
            row = []
            for g, v in zip(e.grads, values):
                if v is not None and not isinstance(v, torch.Tensor):
                    return _error("type", i, f"returned a {type(v).__name__} for {g}, not a torch tensor")
                row.append(None if v is None else v.detach().cpu().to(torch.float64))
            got.append(row)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"status": "ok", "result": judge(e, refs, got)}


def main(argv: list[str]) -> int:
    name, file, limit, result_path = argv
    status = run(name, file, float(limit))
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(status, f, allow_nan=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

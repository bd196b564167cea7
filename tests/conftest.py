import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
REGRESSION = CONFIGS / "regression.yaml"

os.environ.pop("NO_COLOR", None)
os.environ.pop("COLUMNS", None)  # plain output in tests: no width limit unless a test sets one


def _build_the_click_command_once():
    """Typer's CliRunner rebuilds the click command from the app on every invoke (typer.main.get_command:
    ~17 ms of signature inspection here, half the time of a short command, thousands of times a run).
    The app never changes during the tests, so each process builds it once; what each invoke runs (the
    click command's main, under the same isolation) is unchanged. Where a typer release renames the
    private hook, the tests still run, only slower."""
    import functools

    import typer.main
    import typer.testing

    if getattr(typer.testing, "_get_command", None) is typer.main.get_command:
        typer.testing._get_command = functools.cache(typer.main.get_command)


_build_the_click_command_once()


# The longest tests, started first: with work stealing, a long test that starts last leaves one core idle
# while it runs (the docs test alone is about a minute here).
FIRST = ("tests/test_docs.py::test_every_page_then_the_tutorial_run_as_written_in_one_folder",
         "tests/test_distributed.py::", "tests/test_help.py::test_every_example_in_every_help_runs",
         "tests/test_deep_story.py::", "tests/test_tune.py::")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST))  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core. More workers than cores cost more CPU than their overlap of
    child-process waits wins back (each worker collects and loads torch, and they crowd the cores):
    measured from a clean clone on the README's 2-core machine, 4 workers 116 s (212 s of user CPU),
    3 workers 108 s, 2 workers 91 s (164 s)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def cli(runner):
    """Invoke the app; returns the click Result (stdout and stderr kept apart)."""
    from backprop_cli.cli.app import app

    def invoke(*args, **kw):
        return runner.invoke(app, [str(a) for a in args], **kw)

    return invoke


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def csv_config(tmp_path, csv_text, data_extra="", loss="mse", sizes=(2, 4, 1), batch=2, top=""):
    """A CSV (``d.csv``, target column ``y``) and a config that trains on it, loaded; ``data_extra``
    continues the data mapping (``", standardize: true"``), ``top`` adds top-level YAML."""
    import textwrap

    from backprop_cli.config import load_config

    (tmp_path / "d.csv").write_text(textwrap.dedent(csv_text))
    (tmp_path / "c.yaml").write_text(textwrap.dedent(f"""\
        model: {{input_size: {sizes[0]}, hidden_size: {sizes[1]}, output_size: {sizes[2]}}}
        loss: {loss}
        data: {{kind: csv, path: d.csv, target: y, batch_size: {batch}{data_extra}}}
        """) + top)
    return load_config(tmp_path / "c.yaml")


SEED_YAML = (CONFIGS / "seed.yaml").read_text()


@pytest.fixture
def seed_cfg(tmp_path):
    return write(tmp_path / "seed.yaml", SEED_YAML)


def run_py(code: str, **kw):
    import subprocess

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **kw)


def engine_records(model, loss_fn, optimizer, batches, steps, *, scheduler=None, sync_every=1, flush_every=None,
                   measure_updates=False, should_stop=None, start_step=0, reduce_stats=None, probe=None, **guard):
    """The engine (``engine.run_steps``) on these parts; ``guard`` holds :class:`engine.Guard`'s fields."""
    from backprop_cli.core.engine import Guard, Loop, run_steps

    return run_steps(Loop(model, loss_fn, optimizer, batches, scheduler), steps, start_step=start_step,
                     guard=Guard(**guard), read_every=sync_every, flush_every=(flush_every,) if flush_every else (),
                     measure_updates=measure_updates, should_stop=should_stop, reduce_stats=reduce_stats,
                     probe=probe)


_IN_A_NEW_PROCESS = r"""
import json, sys
import conftest  # noqa: F401  (the click command built once, as in the tests)
from typer.testing import CliRunner
from backprop_cli.cli.app import app
for argv in json.load(sys.stdin):
    r = CliRunner().invoke(app, argv)
    print(json.dumps({"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}), flush=True)
"""


def cli_in_a_new_process(*invocations, timeout=180):
    """Each invocation (a list of arguments) through the app, one after another in one new process, so that
    a crash (a segfault in a kernel) fails the test instead of killing the worker, and the process pays
    torch's start-up once for all of them. Returns (return code, one result per invocation that finished:
    ``{"exit_code", "stdout", "stderr"}``)."""
    import json
    import subprocess

    r = subprocess.run([sys.executable, "-c", _IN_A_NEW_PROCESS], input=json.dumps([[str(a) for a in i]
                                                                                   for i in invocations]),
                       capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                            "OMP_NUM_THREADS": "1"})
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines()]


# --------------------------------------------------------------------------- helpers of the untrusted-input tests

def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, text
    return text


def within(seconds, call):
    """call() in a thread; fails if it is still running (blocked) after ``seconds``."""
    import threading

    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked"
    return outcome[0]


def error_of(call):
    """The one line of the BackpropError that ``call()`` raises, or None."""
    from backprop_cli.errors import BackpropError

    try:
        call()
    except BackpropError as e:
        return one_line(e)
    return None


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())

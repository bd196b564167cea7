"""Ctrl-C and SIGTERM on a real process: finish the step, flush, save, exit 130."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import CONFIGS, ROOT

REG = CONFIGS / "regression.yaml"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_flushes_saves_and_exits_130(tmp_path, sig):
    m, ck, png = tmp_path / "m.jsonl", tmp_path / "c.pt", tmp_path / "run.png"
    cmd = [sys.executable, "-m", "backprop_cli", "train", "-c", str(REG), "--steps", "1000000",
           "--log-every", "1", "--metrics", str(m), "--save", str(ck), "--plot", str(png)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.strip().startswith("50 "):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in out and f"interrupted by {signal.Signals(sig).name}" in err
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    steps = [x["step"] for x in recs]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 50
    assert torch.load(ck, weights_only=True)["step"] == steps[-1]
    assert png.read_bytes().startswith(b"\x89PNG") and f"plot:       wrote {png}" in out
    assert "Traceback" not in err


# --------------------------------------------------------------------------- start-up, a second Ctrl-C, saves

import re  # noqa: E402
import time  # noqa: E402

ONE_LINE = re.compile(r"error: interrupted( by SIG(INT|TERM))?( after step \d+)?")


def launch(*args):
    return subprocess.Popen([sys.executable, "-m", "backprop_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})


def handlers_installed(pid: int) -> None:
    """Wait until the process catches SIGTERM (/proc: SigCgt), i.e. backprop's first line has run: a
    signal before that meets the interpreter's own start-up (site, .pth files), which no program can
    make quiet."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    pytest.fail("the handlers were never installed")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_start_up_is_one_line_and_exit_130(sig):
    """Issue 16, item 18: SIGINT 0.5-1.3 s after launch interrupted `import torch` ("partially
    initialized module" traceback, or a pybind11 abort); SIGTERM in the first 2 s killed silently (143).
    A sweep from interpreter start to the first steps: always exit 130 and one line."""
    for delay in (0.0, 0.2, 0.5, 1.0, 1.6):  # from the moment backprop's handlers are in place
        proc = launch("train", "-c", REG, "--steps", 300, "-q")
        handlers_installed(proc.pid)
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert proc.returncode == 130, (delay, proc.returncode, err[-2000:])
        assert len(lines) == 1 and ONE_LINE.fullmatch(lines[0]), (delay, err[-2000:])
        assert ("SIGTERM" in lines[0]) == (sig == signal.SIGTERM)


def test_a_second_ctrl_c_ends_the_run_at_once_and_leaves_no_temporary_file(tmp_path):
    ck, m = tmp_path / "c.pt", tmp_path / "m.jsonl"
    proc = launch("train", "-c", REG, "--steps", 1_000_000, "--log-every", 1, "--save", ck, "--metrics", m)
    for line in proc.stdout:
        if line.strip().startswith("5 "):
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and ONE_LINE.fullmatch(err.strip()), err
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    if ck.exists():  # the first Ctrl-C's save finished before the second came: a whole checkpoint
        assert torch.load(ck, weights_only=True)["step"] >= 5


SAVE_INTERRUPTED = """
import os, signal, sys, torch
from backprop_cli.io import signals
from backprop_cli.io.checkpoint import save_checkpoint

signals.install()
real = torch.save

def save(obj, f, *a, **kw):  # Ctrl-C arrives while the checkpoint is being written
    os.kill(os.getpid(), signal.SIGINT)
    real(obj, f, *a, **kw)

torch.save = save
model = torch.nn.Linear(200, 200)
save_checkpoint(sys.argv[1], model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step=3, config={})
print("not reached")
"""


def test_a_signal_during_a_save_waits_until_the_checkpoint_is_in_place(tmp_path):
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"the previous checkpoint")
    r = subprocess.run([sys.executable, "-c", SAVE_INTERRUPTED, str(ck)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 130 and r.stderr == "error: interrupted\n" and "not reached" not in r.stdout, r.stderr
    assert torch.load(ck, weights_only=True)["step"] == 3 and os.listdir(tmp_path) == ["c.pt"]


WRITE_INTERRUPTED = """
import os, signal, sys, time
from backprop_cli.io import signals
from backprop_cli.io.atomic import AtomicFile

signals.install()
out = AtomicFile(sys.argv[1])
out.file.write("half of the new file")
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
print("not reached")
"""


def test_a_signal_while_an_output_is_written_removes_its_temporary_file(tmp_path):
    old = tmp_path / "m.jsonl"
    old.write_text("the previous run\n")
    r = subprocess.run([sys.executable, "-c", WRITE_INTERRUPTED, str(old)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 130 and r.stderr == "error: interrupted by SIGTERM\n", r.stderr
    assert os.listdir(tmp_path) == ["m.jsonl"] and old.read_text() == "the previous run\n"


SIGNAL_WHILE_CLOSING = """\
import os, signal, sys
from backprop_cli.runs import sinks
real = sinks.MetricsSink.close
def close(self, outcome):
    os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C after the last step, while the outputs are written
    return real(self, outcome)
sinks.MetricsSink.close = close
from backprop_cli.__main__ import main
sys.argv = ["backprop"] + sys.argv[1:]
main()
"""


def test_a_signal_while_the_outputs_are_written_lets_them_finish(tmp_path):
    """The first Ctrl-C after the last step, while the outputs are written, is like one during the steps:
    every output is written and reported, then exit 130 with one line (it used to end the process at
    once, without the summary and the outputs after the one being written)."""
    r = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_CLOSING, "train", "-c", str(CONFIGS / "seed.yaml"),
                        "--steps", "50", "--metrics", "m.jsonl", "--save", "s.pt"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}, timeout=120)
    assert r.returncode == 130, r.stderr
    assert "metrics:    wrote m.jsonl" in r.stdout and "checkpoint: wrote s.pt (step 50)" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == (
        "error: interrupted by SIGINT after the last step (50), once every output was written")
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 50
    from backprop_cli.io.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "s.pt")["step"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "s.pt"]

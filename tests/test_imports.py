"""Paths that do not train never import torch: help, config show/validate, init and every error exit."""

import subprocess
import sys

import pytest

from conftest import CONFIGS, ROOT, write

PROBE = ("import sys\nfrom backprop_cli.cli.app import main\nsys.argv = ['backprop'] + sys.argv[1:]\n"
         "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")


def run(args, cwd):
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def bad_csv(tmp_path):
    write(tmp_path / "d.csv", "a,b,y\n1,2,3\n4,x,6\n")
    return write(tmp_path / "c.yaml", "model: {input_size: 2, hidden_size: 4, output_size: 1}\n"
                                      "data: {kind: csv, path: d.csv, target: y, batch_size: 2}\n")


CASES = {
    "help": ["--help"],
    "config validate": ["config", "validate", "-c", CONFIGS / "seed.yaml"],
    "config show": ["config", "show", "-c", CONFIGS / "seed.yaml", "--format", "json"],
    "init": ["init", "new.yaml"],
    "a config error": ["train", "-c", CONFIGS / "seed.yaml", "--set", "optimzer.lr=1"],
    "a missing config": ["train", "-c", "nope.yaml"],
    "a bad output path": ["train", "-c", CONFIGS / "seed.yaml", "--metrics", "m.txt"],
    "a bad CSV cell (train)": ["train", "-c", "BAD"],
    "a bad CSV cell (compare)": ["compare-optimizers", "-c", "BAD"],
    "a bad CSV cell (inspect-grads)": ["inspect-grads", "-c", "BAD"],
    "a bad CSV cell (check-grads)": ["check-grads", "-c", "BAD"],
    "a bad optimizer spec": ["compare-optimizers", "-c", CONFIGS / "seed.yaml", "-o", "adam:lr=0"],
    "explain with a bad number": ["explain", "--w1", "nan"],
    "init from a missing CSV": ["init", "x.yaml", "--csv", "missing.csv"],
    "predict on a missing CSV": ["predict", "--checkpoint", "c.pt", "--data", "missing.csv"],
    "evaluate on a directory": ["evaluate", "--checkpoint", "c.pt", "--data", "."],
    "exercise list": ["exercise", "list"],
    "exercise start": ["exercise", "start", "linear", "--out", "lin.py"],
    "exercise check of a missing file": ["exercise", "check", "missing.py"],
    "graph --help": ["graph", "--help"],
    "graph with a bad output": ["graph", "--example", "--out", "g.txt"],
}
NO_ERROR = ("help", "config validate", "config show", "init", "exercise list", "exercise start", "graph --help")


@pytest.mark.parametrize("case", CASES)
def test_no_torch_import(case, tmp_path, bad_csv):
    args = [bad_csv if a == "BAD" else a for a in CASES[case]]
    r = run(args, tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr
    if case not in NO_ERROR:
        assert r.stderr.count("error: ") == 1, r.stderr


def test_the_probe_sees_torch_when_training(tmp_path):
    r = run(["train", "-c", CONFIGS / "seed.yaml", "-q"], tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "TORCH"


def test_the_process_entry_tunes_the_collector_and_its_outputs_are_whole(tmp_path):
    """The ``backprop`` entry (``__main__.main``) collects every GC_THRESHOLD allocations and freezes the
    heap at exit (the interpreter's last collection skips it: about 0.4 s of a one-step train). What the
    command wrote is whole: every metrics record, a checkpoint that loads with the trained weights,
    every TensorBoard scalar (written by a thread of TensorBoard's own)."""
    try:
        import tensorboard  # noqa: F401
        tensorboard = True
    except ImportError:
        tensorboard = False
    probe = ("import gc, sys\nfrom backprop_cli.__main__ import GC_THRESHOLD, main\n"
             "sys.argv = ['backprop'] + sys.argv[1:]\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             "print(code, gc.get_threshold()[0] == GC_THRESHOLD, gc.get_freeze_count() > 0)\n")
    r = subprocess.run([sys.executable, "-c", probe, "train", "-c", str(CONFIGS / "seed.yaml"), "--steps", "30",
                        "--metrics", "m.jsonl", "--save", "ck.pt", "--log-every", "10", "-q",
                        *(["--tensorboard", "tb"] if tensorboard else [])], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.stdout.split()[-3:] == ["0", "True", "True"], r.stdout + r.stderr
    import json

    import torch

    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records if "loss" in x] == list(range(1, 31))
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["step"] == 30
    # the checkpoint holds the weights of 30 steps: those of the same run made here,
    from backprop_cli.core.build import build_run
    from backprop_cli.config import load_config
    from conftest import engine_records

    here = build_run(load_config(CONFIGS / "seed.yaml", ["train.steps=30"]))
    assert len(list(engine_records(here.model, here.loss_fn, here.optimizer, here.batches, 30))) == 30
    mine = here.model.state_dict()
    assert set(state["model"]) == set(mine)
    # to float32 rounding (the command runs one torch thread); one step more or less moves them ~4e-3
    assert all(torch.allclose(state["model"][k], mine[k], rtol=0, atol=1e-6) for k in mine)
    if tensorboard:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "tb")).Reload()
        assert [e.step for e in events.Scalars("loss")] == list(range(1, 31))
        assert [e.value for e in events.Scalars("loss")] == pytest.approx([x["loss"] for x in records], rel=1e-6)

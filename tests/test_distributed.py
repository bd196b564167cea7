"""DDP under torchrun (gloo, CPU, 2 processes) against one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest

from conftest import CONFIGS, ROOT, write

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "backprop_cli"]


def run(args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def losses(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("batch", [64, 63])  # 63: ranks take 32 and 31 rows
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, cli, batch):
    """One torchrun run per case (each costs three processes): with 64 it goes through ``python -m
    backprop_cli`` and saves a checkpoint (written once, by rank 0); with 63 through the installed
    ``backprop`` script (``--no-python``), as a user runs it. The one-process run is in this process."""
    import shutil

    import torch

    cfg = CONFIGS / "regression.yaml"
    sets = ["--set", f"data.batch_size={batch}", "--steps", "40"]
    two, one, ck = tmp_path / "two.jsonl", tmp_path / "one.jsonl", tmp_path / "c.pt"
    exe = shutil.which("backprop")
    if batch == 63 and exe is None:
        pytest.skip("the backprop script is not on PATH")
    launch = (TORCHRUN if batch == 64 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python", exe])
    extra = ["--save", str(ck)] if batch == 64 else []
    r = run(launch + ["train", "-c", str(cfg), *sets, "--metrics", str(two), "--log-every", "10", *extra])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ranks, DistributedDataParallel over gloo" in r.stdout
    assert r.stdout.count("done:") == 1  # only rank 0 prints
    r1 = cli("train", "-c", cfg, *sets, "--metrics", one, "-q")
    assert r1.exit_code == 0, r1.output
    a, b = losses(two), losses(one)
    assert [x["step"] for x in a] == list(range(1, 41))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
        for name in y["grad_norms"]:
            assert x["grad_norms"][name] == pytest.approx(y["grad_norms"][name], rel=1e-4, abs=1e-8)
    if batch == 64:
        state = torch.load(ck, weights_only=True)
        assert state["step"] == 40 and list(state["model"]) == ["layer1.weight", "layer1.bias", "layer2.weight",
                                                                 "layer2.bias"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "one.jsonl", "two.jsonl"]  # no stray copy


def test_an_error_ends_every_rank_with_one_clear_message(tmp_path):
    write(tmp_path / "d.csv", "a,y\n1,2\n3,x\n")
    cfg = write(tmp_path / "c.yaml", "model: {input_size: 1, hidden_size: 2, output_size: 1}\n"
                                     "data: {kind: csv, path: d.csv, target: y, batch_size: 2}\n")
    r = run(TORCHRUN + ["train", "-c", str(cfg)], timeout=60)
    assert r.returncode != 0
    assert r.stderr.count("error: ") == 1 and "d.csv:3: column 'y': not a number" in r.stderr


@pytest.mark.parametrize("command", [["compare-optimizers"], ["inspect-grads"], ["check-grads"]])
def test_single_process_commands_refuse_torchrun(cli, monkeypatch, command):
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = cli(*command, "-c", CONFIGS / "seed.yaml")
    assert r.exit_code == 2 and "runs in one process; run it without torchrun" in r.stderr


def test_threads_option(cli, seed_cfg):
    import torch

    before = torch.get_num_threads()
    try:
        r = cli("train", "-c", seed_cfg, "--threads", 1)
        assert r.exit_code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def keep_threads(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_help_states_the_rule_set_threads_follows(keep_threads, monkeypatch):
    """--threads' help (every command's) is the rule of set_threads, from one text: its threshold is the
    one where set_threads goes from 1 thread to all cores, and no older default ("torch's own choice")."""
    import re

    import typer.main

    from backprop_cli.cli.app import app
    from backprop_cli.limits import THREADS_DEFAULT
    from backprop_cli.runs import distributed

    helps = set()
    for name, cmd in typer.main.get_command(app).commands.items():
        for p in getattr(cmd, "params", []):
            if "--threads" in getattr(p, "opts", []):
                helps.add(p.help)
    assert len(helps) == 1, helps
    text = helps.pop()
    assert THREADS_DEFAULT in text and "own choice" not in text
    mflop = float(re.search(r"1 thread below (\S+) MFLOP per step", text).group(1))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(distributed, "TORCH_DEFAULT_THREADS", 2)
    assert distributed.set_threads(None, mflop * 1e6 - 1).startswith("1 (small step")
    assert distributed.set_threads(None, mflop * 1e6).startswith("2 (all cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert distributed.set_threads(None, 1.0) == "2 (OMP_NUM_THREADS=2)"  # "OMP_NUM_THREADS if set" first
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert distributed.set_threads(None, 1e12) == "2 (4 cores / 2 processes)"  # "else under torchrun"


def test_threads_follow_the_work_per_step(keep_threads, monkeypatch):
    """No --threads and no OMP_NUM_THREADS: 1 thread below the measured threshold (6 · batch ·
    parameters FLOP per step), torch's default (all cores) from it; --threads and OMP_NUM_THREADS win."""
    import torch

    from backprop_cli.runs import distributed
    from backprop_cli.config import flops_per_step, load_config

    seed = load_config(CONFIGS / "seed.yaml")
    assert flops_per_step(seed) == 6 * 5 * (10 * 20 + 20 + 20 * 1 + 1)
    big = load_config(CONFIGS / "seed.yaml", ["model.input_size=1024", "model.hidden_size=4096",
                                              "model.output_size=1024", "data.samples=512", "data.batch_size=512"])
    assert flops_per_step(big) == 6 * 512 * (1025 * 4096 + 4097 * 1024)
    monkeypatch.setattr(distributed, "TORCH_DEFAULT_THREADS", 2)
    assert distributed.set_threads(None, flops_per_step(seed)) == "1 (small step: 7.23 kFLOP < 50 MFLOP)"
    assert torch.get_num_threads() == 1
    assert distributed.set_threads(None, flops_per_step(big)) == "2 (all cores: 25.8 GFLOP per step)"
    assert torch.get_num_threads() == 2
    assert distributed.set_threads(None, distributed.THREADS_THRESHOLD_FLOPS) .startswith("2 (all cores")
    assert distributed.set_threads(None, 49_997_400) == "1 (small step: 49,997,400 FLOP < 50 MFLOP)"
    assert distributed.set_threads(3, flops_per_step(seed)) == "3 (--threads)" and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert distributed.set_threads(None, flops_per_step(seed)) == "3 (OMP_NUM_THREADS=3)"
    assert torch.get_num_threads() == 3  # left as it is
    # a value OpenMP ignores (it says so on stderr) is ignored here too: the work decides, and says why
    for bad in ("", "0", "abc", "-1", "1.5"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert distributed.set_threads(None, flops_per_step(seed)) == (
            f"1 (small step: 7.23 kFLOP < 50 MFLOP; OMP_NUM_THREADS={bad!r} ignored: not a number of threads)")
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert distributed.set_threads(None, flops_per_step(big)).startswith("2 (all cores: 25.8 GFLOP per step; ")
    assert torch.get_num_threads() == 2
    monkeypatch.undo()
    monkeypatch.setattr(distributed, "TORCH_DEFAULT_THREADS", 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert distributed.set_threads(None, flops_per_step(big)) == "1 (one core)"


@pytest.mark.parametrize("command", ["train", "compare-optimizers", "inspect-grads", "check-grads"])
def test_every_command_that_trains_picks_threads_the_same_way(cli, keep_threads, monkeypatch, command):
    import torch

    from backprop_cli.runs import distributed

    monkeypatch.setattr(distributed, "TORCH_DEFAULT_THREADS", 2)
    torch.set_num_threads(2)
    r = cli(command, "-c", CONFIGS / "seed.yaml", *(["--steps", 2] if command == "compare-optimizers" else []))
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == 1
    r = cli(command, "-c", CONFIGS / "seed.yaml", "--threads", 2)
    assert r.exit_code == 0 and torch.get_num_threads() == 2
    if command == "train":  # the start panel says how many and why
        r = cli(command, "-c", CONFIGS / "seed.yaml")
        assert "threads:    1 (small step: 7.23 kFLOP < 50 MFLOP)" in r.stdout


def test_batch_norm_under_ddp_keeps_rank_0s_running_statistics_and_resumes(tmp_path):
    """model.norm: batch under torchrun: each rank normalizes its own slice of the global batch (no
    SyncBatchNorm), DDP broadcasts rank 0's buffers before every forward, so the running mean and variance
    in the checkpoint are those of rank 0's slices. Computed here from the rows and the saved weights:
    step 1 from the seeded init's layer1, step 2 (after --resume) from the first checkpoint's."""
    import torch
    from torch import nn

    rows = [[0.1 * i, (-1) ** i * 0.3 * i, 1.0 / (i + 1)] for i in range(8)]
    write(tmp_path / "d.csv", "a,b,c,y\n" + "".join(f"{a},{b},{c},{a - b + c}\n" for a, b, c in rows))
    cfg = write(tmp_path / "c.yaml", "seed: 4\nmodel: {input_size: 3, hidden_sizes: [5, 5], output_size: 1, "
                                     "activation: tanh, norm: batch}\noptimizer: {name: sgd, lr: 0.1}\n"
                                     "data: {kind: csv, path: d.csv, target: y, batch_size: 8, shuffle: false}\n"
                                     "train: {steps: 2, log_every: 1}\n")
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    r = run(TORCHRUN + ["train", "-c", str(cfg), "--steps", "1", "--save", str(one)])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(TORCHRUN + ["train", "-c", str(cfg), "--resume", str(one), "--save", str(two)])
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = (torch.load(p, weights_only=True) for p in (one, two))
    assert first["step"] == 1 and second["step"] == 2
    x = torch.tensor(rows, dtype=torch.float32)
    torch.manual_seed(4)
    w_init = nn.Linear(3, 5, bias=False).weight.detach()  # layer1: the first module the seeded net builds

    def update(mean, var, weight, part):
        z = part @ weight.T
        return 0.9 * mean + 0.1 * z.mean(0), 0.9 * var + 0.1 * z.var(0, unbiased=True)

    rank0, rank1 = x[:4], x[4:]  # the global batch of 8, split in rank order
    mean, var = update(torch.zeros(5), torch.ones(5), w_init, rank0)
    m1 = first["model"]
    torch.testing.assert_close(m1["norm1.running_mean"], mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m1["norm1.running_var"], var, rtol=1e-5, atol=1e-6)
    other, _ = update(torch.zeros(5), torch.ones(5), w_init, rank1)
    glob, _ = update(torch.zeros(5), torch.ones(5), w_init, x)
    assert (m1["norm1.running_mean"] - other).abs().max() > 1e-3 and (m1["norm1.running_mean"] - glob).abs().max() > 1e-3
    assert int(m1["norm1.num_batches_tracked"]) == 1
    # resume: the buffers come back from the checkpoint, step 2 goes on from rank 0's slice again
    mean2, var2 = update(m1["norm1.running_mean"], m1["norm1.running_var"], m1["layer1.weight"], rank0)
    torch.testing.assert_close(second["model"]["norm1.running_mean"], mean2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second["model"]["norm1.running_var"], var2, rtol=1e-5, atol=1e-6)
    assert int(second["model"]["norm1.num_batches_tracked"]) == 2

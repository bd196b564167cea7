"""--threads and OMP_NUM_THREADS (runs/distributed.py set_threads): bounded, one line beyond."""


import os

import pytest
import torch
from conftest import CONFIGS, REGRESSION, one_line

from backprop_cli.errors import BackpropError, CheckpointError

# --------------------------------------------------------------------------- --threads


def test_threads_beyond_four_per_core_are_one_line_not_an_abort(cli, monkeypatch):
    """Issue 16, item 11: 20000 aborted in libgomp, 100000 segfaulted."""
    import backprop_cli.runs.distributed as distributed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail(f"torch was asked for {n} threads"))
    for n in (20000, 100000, 9):
        with pytest.raises(BackpropError) as e:
            distributed.set_threads(n)
        assert one_line(e.value) == f"--threads {n}: at most 8 on this machine (4 × 2 cores)"
    r = cli("train", "-c", REGRESSION, "--steps", 2, "--threads", 20000)
    assert r.exit_code == 2 and r.stderr.strip() == "error: --threads 20000: at most 8 on this machine (4 × 2 cores)"


@pytest.mark.parametrize("value", ["20000", "100000", "9", "9,2", "1" * 5000])
def test_omp_num_threads_beyond_the_bound_is_one_line(cli, monkeypatch, value):
    """OMP_NUM_THREADS is held to --threads' bound (4 × the cores)."""
    import backprop_cli.runs.distributed as distributed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    shown = value if len(value) <= 20 else value[:17] + "..."
    line = f"OMP_NUM_THREADS={shown}: at most 8 on this machine (4 × 2 cores); lower it or unset it"
    with pytest.raises(BackpropError) as e:
        distributed.set_threads(None)
    assert one_line(e.value) == line
    r = cli("train", "-c", CONFIGS / "seed.yaml", "--steps", 1)
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {line}"
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert distributed.set_threads(None).endswith("(OMP_NUM_THREADS=8)")


def test_cuda_rng_states_this_machine_cannot_use_name_the_checkpoint(monkeypatch):
    from backprop_cli.io.checkpoint import restore_rng

    def refuse(states):
        raise RuntimeError("Invalid device index\nmore")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    with pytest.raises(CheckpointError) as e:
        restore_rng({"rng": {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 3}}, "runs/ck.pt")
    assert one_line(e.value).startswith("runs/ck.pt: rng.cuda: not CUDA RNG states this machine can use (")


def test_threads_within_the_bound_are_set(monkeypatch):
    import backprop_cli.runs.distributed as distributed

    asked = []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    distributed.set_threads(8)
    distributed.set_threads(1)
    assert asked == [8, 1]

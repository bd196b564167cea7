"""The non-finite guard: stop before the update, skip mode, deferred reads, the last good state."""

import json
import math
import os

import pytest
import torch

from backprop_cli.core.build import build_run
from backprop_cli.config import load_config
from backprop_cli.core.engine import NonFiniteError
from conftest import CONFIGS, engine_records, write

REG = CONFIGS / "regression.yaml"


def test_nonfinite_stops_with_exit_3_and_keeps_the_last_good_state(cli, tmp_path):
    m, ck = tmp_path / "m.jsonl", tmp_path / "c.pt"
    r = cli("train", "-c", REG, "--set", "optimizer.lr=100", "--metrics", m, "--save", ck)
    assert r.exit_code == 3, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: non-finite value at step 8: loss inf")
    assert "first non-finite gradient: layer1.weight" in err[0]
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert [x["step"] for x in recs] == list(range(1, 8))
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 7 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert "stopped:" in r.stdout and "checkpoint: wrote" in r.stdout
    # the saved weights are exactly those after step 7 (the bad step 8 never updated them)
    cfg = load_config(REG, ["device=cpu", "optimizer.lr=100", "train.steps=7"])
    run = build_run(cfg)
    list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, 7))
    for k, v in run.model.state_dict().items():
        assert torch.equal(state["model"][k], v)


class NaNAt:
    """Batches of a run, with the inputs of some steps made NaN."""

    def __init__(self, batches, bad_indices):
        self.batches, self.bad = batches, set(bad_indices)

    def __call__(self, i):
        x, y = self.batches(i)
        return (torch.full_like(x, math.nan), y) if i in self.bad else (x, y)


def test_skip_mode_skips_the_update_and_counts():
    cfg = load_config(REG, ["device=cpu", "train.steps=6"])
    run = build_run(cfg)
    ref = build_run(cfg)
    recs = list(engine_records(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [2]), 6, on_nonfinite="skip"))
    assert [r.skipped for r in recs] == [False, False, True, False, False, False]
    assert math.isnan(recs[2].loss)
    # the same as a plain loop that leaves batch 2 out
    opt = ref.optimizer
    for i in (0, 1, 3, 4, 5):
        x, y = ref.batches(i)
        loss = ref.loss_fn(ref.model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(run.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)


def test_skip_mode_gives_up_after_max_skips():
    cfg = load_config(REG, ["device=cpu"])
    run = build_run(cfg)
    with pytest.raises(NonFiniteError, match="non-finite value at step 4 after skipping 2 step"):
        list(engine_records(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [1, 2, 3]), 10,
                   on_nonfinite="skip", max_skips=2))


def test_deferred_reads_still_end_the_records_at_the_last_good_step():
    """The accelerator path (read-back every k steps), exercised on the CPU."""
    cfg = load_config(REG, ["device=cpu"])
    run = build_run(cfg)
    seen = []
    with pytest.raises(NonFiniteError) as e:
        for rec in engine_records(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [5]), 20, sync_every=4):
            seen.append(rec.step)
    assert seen == [1, 2, 3, 4, 5] and e.value.step == 6 and e.value.last_good_step == 5
    assert e.value.model_step == 8  # the model moved on until the read-back; train won't save it


def diverging_csv_run(tmp_path, max_skips):
    """A CSV run with lr 50: it overflows after a few steps, and keeps overflowing."""
    data = ["a,y"] + [f"{i},{i % 3}" for i in range(20)]
    write(tmp_path / "d.csv", "\n".join(data) + "\n")
    return write(tmp_path / "c.yaml", "model: {input_size: 1, hidden_size: 4, output_size: 1}\n"
                                      "optimizer: {name: sgd, lr: 50}\n"
                                      "data: {kind: csv, path: d.csv, target: y, batch_size: 5}\n"
                                      f"train: {{steps: 40, on_nonfinite: skip, max_skips: {max_skips}}}\n")


def test_skip_mode_in_the_cli_writes_skipped_columns(cli, tmp_path):
    cfg = diverging_csv_run(tmp_path, max_skips=3)
    m = tmp_path / "m.csv"
    r = cli("train", "-c", cfg, "--metrics", m, "--log-every", 1)
    assert r.exit_code == 3 and "after skipping 3 step(s)" in r.stderr
    head, *rows = m.read_text().splitlines()
    col = head.split(",").index("skipped")
    assert [row.split(",")[col] for row in rows].count("True") == 3


def test_skip_mode_stop_still_saves_the_unchanged_weights(cli, tmp_path):
    """Skipped steps leave the weights good, so the checkpoint after max_skips holds them."""
    cfg = diverging_csv_run(tmp_path, max_skips=2)
    ck = tmp_path / "c.pt"
    r = cli("train", "-c", cfg, "--save", ck, "-q")
    assert r.exit_code == 3
    state = torch.load(ck, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert f"(step {state['step']})" in r.stdout


def test_the_accelerator_read_back_policy_on_the_cpu(cli, tmp_path):
    """train with the accelerator policy (read back on logging steps only) gives the same records."""
    from backprop_cli.render.train import TrainReport
    from backprop_cli.render.console import make_console
    from backprop_cli.runs.training import TrainOptions, run_training

    plain, deferred = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert cli("train", "-c", REG, "--steps", 23, "--log-every", 5, "--metrics", plain, "-q").exit_code == 0
    cfg = load_config(REG, ["device=cpu", "train.steps=23"])
    with open(os.devnull, "w") as null:
        run_training(cfg, TrainOptions(metrics=deferred, log_every=5, read_every=5),
                     TrainReport(make_console(null), plain=True, quiet=True))
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "time"} for line in p.read_text().splitlines()]
    assert strip(plain) == strip(deferred)

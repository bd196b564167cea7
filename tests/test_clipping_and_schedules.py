"""Gradient clipping and learning-rate schedules against torch's own."""

import json
import math

import pytest
import torch
from torch import nn

from backprop_cli.core.build import build_run
from backprop_cli.config import load_config
from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"


def test_clipping_logs_the_norm_before_clipping_and_matches_clip_grad_norm(cli, tmp_path):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 30, "--set", "train.clip_grad_norm=0.3", "--metrics", m)
    assert r.exit_code == 0 and "guards:     clip grad norm at 0.3" in r.stdout
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert all(x["clipped"] == (x["grad_norm"] > 0.3) for x in recs) and any(x["clipped"] for x in recs)
    assert f"clipped:    {sum(x['clipped'] for x in recs)} of 30" in r.stdout
    cfg = load_config(REG, ["device=cpu", "train.steps=30"])
    ref = build_run(cfg)
    for i, x in enumerate(recs):
        xb, yb = ref.batches(i)
        loss = ref.loss_fn(ref.model(xb), yb)
        ref.optimizer.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(ref.model.parameters(), 0.3)
        assert x["grad_norm"] == pytest.approx(norm.item(), rel=1e-6)
        assert x["loss"] == pytest.approx(loss.item(), rel=1e-5)
        ref.optimizer.step()


@pytest.mark.parametrize("spec,make", [
    ("{name: step, step_size: 4, gamma: 0.5}", lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5)),
    ("{name: cosine, T_max: 12, eta_min: 0.001}", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 12, 0.001)),
    ("{name: cosine}", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 20)),
])
def test_schedules_log_the_lr_each_step_like_torch(cli, tmp_path, spec, make):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 20, "--set", f"scheduler={spec}", "--metrics", m, "--log-every", 5)
    assert r.exit_code == 0, r.output
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make(opt)
    expected = []
    for _ in range(20):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [json.loads(line)["lr"] for line in m.read_text().splitlines()] == expected
    assert "schedule:" in r.stdout


def test_warmup_then_cosine(tmp_path, cli):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 30, "--set", "scheduler={name: warmup_cosine, warmup_steps: 10, eta_min: 0.01}",
            "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    lrs = [json.loads(line)["lr"] for line in m.read_text().splitlines()]
    assert lrs[:10] == pytest.approx([0.1 * (s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("spec,options,length,total", [
    ("{name: one_cycle, pct_start: 0.25}", dict(max_lr=0.1, pct_start=0.25), ("--steps", 20), 20),  # max_lr: the lr
    ("{name: one_cycle, max_lr: 0.5, anneal_strategy: linear, div_factor: 10, final_div_factor: 100}",
     dict(max_lr=0.5, anneal_strategy="linear", div_factor=10, final_div_factor=100), ("--epochs", 2), 32),
])
def test_one_cycle_logs_the_lr_of_torchs_one_cycle_lr(cli, tmp_path, spec, options, length, total):
    """Over the run's steps: train.steps, or train.epochs × the batches of an epoch (1024 rows / 64 = 16)."""
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, *length, "--set", f"scheduler={spec}", "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=total, cycle_momentum=False, **options)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs = [json.loads(line)["lr"] for line in m.read_text().splitlines()]
    assert lrs == expected
    assert lrs[0] == pytest.approx(options["max_lr"] / options.get("div_factor", 25))
    assert max(lrs) == pytest.approx(options["max_lr"], rel=0.05)


def test_one_cycle_leaves_the_momentum_as_configured():
    run = build_run(load_config(REG, ["device=cpu", "train.steps=10", "scheduler=one_cycle"]))
    for _ in range(5):
        run.optimizer.step()
        run.scheduler.step()
    assert run.optimizer.param_groups[0]["momentum"] == 0.9 and run.optimizer.param_groups[0]["lr"] < 0.1


PLATEAU = """\
seed: 0
device: cpu
model: {input_size: 8, hidden_size: 16, output_size: 2, activation: tanh}
optimizer: {name: sgd, lr: 0.3, momentum: 0.9}
data: {kind: synthetic, samples: 200, batch_size: 32, validation: 0.25}
scheduler: {name: reduce_on_plateau, factor: 0.5, patience: 1, cooldown: 1, min_lr: 0.05}
train: {steps: 60, eval_every: 3}
"""


def test_reduce_on_plateau_follows_torchs_scheduler_fed_the_runs_val_loss(cli, tmp_path):
    """The lr of every step is that of torch's ReduceLROnPlateau stepped, in a plain loop, with the val_loss
    of each regular evaluation (every 3 steps) the run printed; the extra one at the last step (60 is a
    multiple here) is one of them."""
    cfg, m = tmp_path / "p.yaml", tmp_path / "m.jsonl"
    cfg.write_text(PLATEAU)
    r = cli("train", "-c", cfg, "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=0.05)
    expected = []
    for rec in recs:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        if rec["step"] % 3 == 0:
            sched.step(rec["val_loss"])
    lrs = [rec["lr"] for rec in recs]
    assert lrs == expected
    assert len(set(lrs)) >= 3 and min(lrs) == 0.05  # it reduced more than once, down to min_lr


def test_reduce_on_plateau_without_validation_data_is_one_line_naming_the_key(cli, tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(PLATEAU.replace(", validation: 0.25", "").replace(", eval_every: 3", ""))
    r = cli("train", "-c", cfg)
    assert r.exit_code == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {cfg}:") and "scheduler" in line and "data.validation" in line


@pytest.mark.parametrize("schedule,stop", [
    ("{name: reduce_on_plateau, factor: 0.5, patience: 0}", 31),  # stopped between two evaluations
    ("{name: reduce_on_plateau, factor: 0.5, patience: 2, cooldown: 1}", 30),  # at one
    ("{name: one_cycle, max_lr: 0.5, pct_start: 0.4}", 25),
])
def test_a_stopped_and_resumed_schedule_is_bitwise_the_run_straight_through(cli, tmp_path, monkeypatch, schedule,
                                                                            stop):
    """The run is stopped as a SIGTERM stops it (after step ``stop``, --save written, exit 130), so that it is
    the same 60-step run (one_cycle's length is the run's), then resumed."""
    import signal

    from backprop_cli.io.signals import StopRequest
    from backprop_cli.runs import training

    cfg, full, rest, ck = tmp_path / "p.yaml", tmp_path / "full.jsonl", tmp_path / "rest.jsonl", tmp_path / "h.pt"
    cfg.write_text(PLATEAU.replace("{name: reduce_on_plateau, factor: 0.5, patience: 1, cooldown: 1, min_lr: 0.05}",
                                   schedule))
    assert cli("train", "-c", cfg, "--metrics", full, "-q").exit_code == 0

    class TermAfter(StopRequest):
        asked = 0

        def __call__(self) -> bool:  # asked once after every step while the steps run
            TermAfter.asked += 1
            if TermAfter.asked == stop:
                self.signal = signal.SIGTERM
            return super().__call__()

    with monkeypatch.context() as patched:
        patched.setattr(training, "StopRequest", TermAfter)
        r = cli("train", "-c", cfg, "--save", ck, "-q")
    assert r.exit_code == 130 and torch.load(ck, weights_only=True)["step"] == stop
    r = cli("train", "-c", cfg, "--resume", ck, "--metrics", rest, "-q")
    assert r.exit_code == 0, r.output
    a = [json.loads(line) for line in full.read_text().splitlines()]
    b = [json.loads(line) for line in rest.read_text().splitlines()]
    assert [x["step"] for x in b] == list(range(stop + 1, 61))
    assert [x["lr"] for x in b] == [x["lr"] for x in a[stop:]]
    assert [x["loss"] for x in b] == [x["loss"] for x in a[stop:]]  # bitwise (JSON floats round-trip)
    assert [x.get("val_loss") for x in b] == [x.get("val_loss") for x in a[stop:]]
    assert len({x["lr"] for x in a}) > 2  # the schedule moved the lr


@pytest.mark.parametrize("key,value", [("best", "low"), ("best", math.nan), ("num_bad_epochs", 1.5),
                                       ("cooldown_counter", None)])
def test_a_checkpoint_with_a_bad_plateau_state_is_refused_in_one_line(cli, tmp_path, key, value):
    cfg, ck = tmp_path / "p.yaml", tmp_path / "h.pt"
    cfg.write_text(PLATEAU)
    assert cli("train", "-c", cfg, "--steps", 12, "--save", ck, "-q").exit_code == 0
    state = torch.load(ck, weights_only=True)
    assert isinstance(state["scheduler"]["best"], float) and state["scheduler"]["best"] < math.inf  # evaluated
    state["scheduler"][key] = value
    torch.save(state, ck)
    r = cli("train", "-c", cfg, "--resume", ck, "-q")
    assert r.exit_code == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {ck}") and f"scheduler.{key}" in line

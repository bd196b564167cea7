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

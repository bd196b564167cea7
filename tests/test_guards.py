"""Non-finite guard, clipping, schedules, interrupts, TensorBoard."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from backprop_cli.build import build_run
from backprop_cli.config import load_config
from backprop_cli.engine import NonFiniteError, train
from conftest import CONFIGS, ROOT, write

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
    list(train(run.model, run.loss_fn, run.optimizer, run.batches, 7))
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
    recs = list(train(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [2]), 6, on_nonfinite="skip"))
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
        list(train(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [1, 2, 3]), 10,
                   on_nonfinite="skip", max_skips=2))


def test_deferred_reads_still_end_the_records_at_the_last_good_step():
    """The accelerator path (read-back every k steps), exercised on the CPU."""
    cfg = load_config(REG, ["device=cpu"])
    run = build_run(cfg)
    seen = []
    with pytest.raises(NonFiniteError) as e:
        for rec in train(run.model, run.loss_fn, run.optimizer, NaNAt(run.batches, [5]), 20, sync_every=4):
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
    assert head.split(",")[1] == "skipped"
    assert [row.split(",")[1] for row in rows].count("True") == 3


def test_detect_anomaly_names_the_operation(cli):
    r = cli("train", "-c", REG, "--set", "optimizer.lr=100", "--detect-anomaly")
    assert r.exit_code == 3 and "autograd anomaly at step 8: Function 'TanhBackward0' returned nan" in r.stderr
    # one line: torch's two warnings (mode on; the forward call's whole traceback) are reduced to the
    # model line that ran the operation, and the start panel says the mode is on
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the forward ran it at model.py:" in r.stderr and "self.activation(" in r.stderr
    assert "guards:     autograd anomaly detection (slower)" in r.stdout


def test_anomaly_mode_lets_other_warnings_through(monkeypatch):
    import warnings

    from backprop_cli.training import AnomalyMode

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **kw: shown.append(str(message)))
    with AnomalyMode() as mode:
        warnings.warn("Anomaly Detection has been enabled. (a copy of torch's)")
        warnings.warn("Error detected in MulBackward0. Traceback of forward call that caused the error:\n"
                      '  File "/x/backprop_cli/model.py", line 7, in forward\n    return self.f(x)\n')
        warnings.warn("something else")
    assert shown == ["something else"]
    assert mode.describe(RuntimeError("Function 'MulBackward0' returned nan values.")) == \
        "Function 'MulBackward0' returned nan values; the forward ran it at model.py:7: return self.f(x)"


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
    cli("train", "-c", REG, "--steps", 30, "--set", "scheduler={name: warmup_cosine, warmup_steps: 10, eta_min: 0.01}",
        "--metrics", m, "-q")
    lrs = [json.loads(line)["lr"] for line in m.read_text().splitlines()]
    assert lrs[:10] == pytest.approx([0.1 * (s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_flushes_saves_and_exits_130(tmp_path, sig):
    m, ck = tmp_path / "m.jsonl", tmp_path / "c.pt"
    cmd = [sys.executable, "-m", "backprop_cli", "train", "-c", str(REG), "--steps", "1000000",
           "--log-every", "1", "--metrics", str(m), "--save", str(ck)]
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
    assert "Traceback" not in err


def test_tensorboard_scalars_and_histograms(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    r = cli("train", "-c", REG, "--steps", 12, "--log-every", 5, "--tensorboard", tb, "-q")
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss", "grad_norm/total", "grad_norm/layer1.weight", "lr"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 13))
    assert {"grad/layer1.weight", "weight/layer2.bias"} <= set(tags["histograms"])
    assert [e.step for e in acc.Histograms("grad/layer1.weight")] == [1, 5, 10]
    m = tmp_path / "m.jsonl"
    cli("train", "-c", REG, "--steps", 12, "--metrics", m, "-q")
    losses = [json.loads(line)["loss"] for line in m.read_text().splitlines()]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx(losses, rel=1e-6)


def test_tensorboard_missing_is_a_clear_error(cli, monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    r = cli("train", "-c", REG, "--steps", 2, "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 2 and "pip install 'backprop-cli[tensorboard]'" in r.stderr


def test_the_accelerator_read_back_policy_on_the_cpu(cli, tmp_path, monkeypatch):
    """train with the accelerator policy (read back on logging steps only) gives the same records."""
    import backprop_cli.training as training

    plain, deferred = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert cli("train", "-c", REG, "--steps", 23, "--metrics", plain, "-q").exit_code == 0
    reads = []
    real_train = training.train

    def spy(*a, **kw):
        reads.append(kw["sync_every"])
        return real_train(*a, **kw)

    monkeypatch.setattr(training, "sync_interval", lambda device, log_every: log_every)
    monkeypatch.setattr(training, "train", spy)
    assert cli("train", "-c", REG, "--steps", 23, "--metrics", deferred, "--log-every", 5, "-q").exit_code == 0
    assert reads == [5]
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "time"} for line in p.read_text().splitlines()]
    assert strip(plain) == strip(deferred)


def test_skip_mode_stop_still_saves_the_unchanged_weights(cli, tmp_path):
    """Skipped steps leave the weights good, so the checkpoint after max_skips holds them."""
    cfg = diverging_csv_run(tmp_path, max_skips=2)
    ck = tmp_path / "c.pt"
    r = cli("train", "-c", cfg, "--save", ck, "-q")
    assert r.exit_code == 3
    state = torch.load(ck, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert f"(step {state['step']})" in r.stdout

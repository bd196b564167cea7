"""inspect-grads and explain, checked against plain PyTorch written here."""

import json

import numpy as np
import pytest
import torch

from backprop_cli.config import load_config
from backprop_cli.runs.inspection import backward_at, grad_warnings, prepare
from conftest import CONFIGS
from test_engine import plain_classic_run

PARAMS = ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"]
STAT_KEYS = {"shape", "norm", "mean", "std", "min", "max", "abs_max", "zero_fraction", "grad_to_weight", "grad"}


def test_json_document_is_the_first_steps_gradients(cli, seed_cfg):
    r = cli("inspect-grads", "-c", seed_cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # nothing else on stdout
    assert set(doc) == {"loss", "batch", "params", "warnings"}
    assert doc["batch"] == {"index": 0, "size": 5}
    assert list(doc["params"]) == PARAMS
    _, [(loss, grads)] = plain_classic_run()
    assert doc["loss"] == pytest.approx(loss, rel=1e-7)
    for name, p in doc["params"].items():
        assert set(p) == STAT_KEYS
        assert torch.equal(torch.tensor(p["grad"]), grads[name])
        assert p["shape"] == list(grads[name].shape)
        assert p["norm"] == pytest.approx(grads[name].norm().item(), rel=1e-6)
    assert any(f.startswith("dead ReLU units:") for f in doc["warnings"])


def test_steps_then_the_next_batch_equals_a_plain_loop(cli, seed_cfg):
    r = cli("inspect-grads", "-c", seed_cfg, "--steps", 3, "--format", "json")
    doc = json.loads(r.stdout)
    _, ref = plain_classic_run(steps=4)
    assert doc["batch"]["index"] == 3
    assert doc["loss"] == pytest.approx(ref[3][0], rel=1e-6)
    assert torch.allclose(torch.tensor(doc["params"]["layer2.weight"]["grad"]), ref[3][1]["layer2.weight"], atol=1e-7)


def test_checkpoint_weights_are_used(cli, seed_cfg, tmp_path):
    ck = tmp_path / "c.pt"
    assert cli("train", "-c", seed_cfg, "--steps", 2, "--save", ck, "-q").exit_code == 0
    doc = json.loads(cli("inspect-grads", "-c", seed_cfg, "--checkpoint", ck, "--format", "json").stdout)
    _, ref = plain_classic_run(steps=3)
    assert doc["batch"]["index"] == 2 and doc["loss"] == pytest.approx(ref[2][0], rel=1e-6)


def test_checkpoint_of_another_architecture_is_refused(cli, seed_cfg, tmp_path):
    ck = tmp_path / "c.pt"
    cli("train", "-c", seed_cfg, "--steps", 1, "--save", ck, "-q")
    r = cli("inspect-grads", "-c", seed_cfg, "--checkpoint", ck, "--set", "model.hidden_size=7")
    assert r.exit_code == 2 and "layer1.weight has shape [20, 10] in the checkpoint but [7, 10]" in r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = cli("inspect-grads", "-c", seed_cfg, "--checkpoint", bad)
    assert r.exit_code == 2 and "not a readable checkpoint" in r.stderr and "Traceback" not in r.output


def test_batch_option_picks_another_batch(cli, tmp_path):
    cfg = CONFIGS / "regression.yaml"
    doc = json.loads(cli("inspect-grads", "-c", cfg, "--batch", 5, "--format", "json").stdout)
    run, _ = prepare(load_config(cfg, ["device=cpu"]))
    x, y = run.batches(5)
    loss = run.loss_fn(run.model(x), y)
    loss.backward()
    assert doc["batch"] == {"index": 5, "size": 64} and doc["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(torch.tensor(doc["params"]["layer1.bias"]["grad"]), run.model.layer1.bias.grad)


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".json"])
def test_out_dumps_every_gradient(cli, seed_cfg, tmp_path, suffix):
    out = tmp_path / f"g{suffix}"
    r = cli("inspect-grads", "-c", seed_cfg, "--out", out)
    assert r.exit_code == 0, r.output
    _, [(loss, grads)] = plain_classic_run()
    if suffix == ".pt":
        d = torch.load(out, weights_only=True)
        assert set(d) == {*PARAMS, "weights", "loss"} and d["loss"] == pytest.approx(loss)
        loaded = {n: d[n] for n in PARAMS}
        assert set(d["weights"]) == set(PARAMS)
    elif suffix == ".npz":
        with np.load(out) as d:
            loaded = {n: torch.from_numpy(d[n]) for n in d.files}
    else:
        d = json.loads(out.read_text())
        loaded = {n: torch.tensor(p["grad"]) for n, p in d["params"].items()}
    assert set(loaded) == set(PARAMS)
    for n in PARAMS:
        assert torch.equal(loaded[n], grads[n])


def test_out_with_a_bad_suffix_fails_before_any_work(cli, seed_cfg, tmp_path):
    r = cli("inspect-grads", "-c", seed_cfg, "--out", tmp_path / "g.txt")
    assert r.exit_code == 2 and "must end in .pt or .npz or .json" in r.stderr


def test_clip_shows_before_and_after_like_clip_grad_norm(cli, seed_cfg):
    doc = json.loads(cli("inspect-grads", "-c", seed_cfg, "--clip", 1.0, "--format", "json").stdout)
    _, [(loss, grads)] = plain_classic_run()
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, 1.0)
    c = doc["clip"]
    assert c["clipped"] is True and c["total_norm_before"] == pytest.approx(total.item(), rel=1e-6)
    assert c["total_norm_after"] == pytest.approx(1.0, rel=1e-5)
    for p, n in zip(params, grads):
        assert torch.allclose(torch.tensor(c["params"][n]["grad"]), p.grad)
        assert torch.equal(torch.tensor(doc["params"][n]["grad"]), grads[n])  # the originals are untouched
    table = cli("inspect-grads", "-c", seed_cfg, "--clip", 1.0).stdout
    assert "clip_grad_norm_(max_norm=1): clipped" in table and "before clipping:" in table and "after clipping:" in table


def test_table_output(cli, seed_cfg):
    r = cli("inspect-grads", "-c", seed_cfg)
    assert r.exit_code == 0 and "\x1b" not in r.stdout
    assert "parameter" in r.stdout and "grad_to_weight" in r.stdout and "layer2.bias.grad" in r.stdout
    assert "tensor([" in r.stdout and "dead ReLU units: 5 of 20" in r.stdout
    assert "--no-zero-grad" in r.stdout


def test_large_tensors_are_summarised_unless_full(cli, tmp_path):
    cfg = CONFIGS / "regression.yaml"
    short = cli("inspect-grads", "-c", cfg).stdout
    full = cli("inspect-grads", "-c", cfg, "--full").stdout
    assert "..." in short and "..." not in full and len(full) > len(short)


def test_warnings_for_unused_nonfinite_and_norm_gaps():
    run, _ = prepare(load_config(CONFIGS / "seed.yaml", ["device=cpu"]))
    probe = backward_at(run, 0)
    named = dict(run.model.named_parameters())
    named["layer1.bias"].grad = None
    named["layer2.bias"].grad = torch.tensor([float("nan")])
    named["layer1.weight"].grad.mul_(1e-6)
    from backprop_cli.core.grads import grad_statistics

    out = grad_warnings(probe, grad_statistics(list(run.model.named_parameters())))
    assert "layer1.bias: .grad is None (the parameter is not used by the loss)" in out
    assert "layer2.bias: 1 non-finite gradient value(s)" in out
    assert any(f.startswith("layer1's gradient norm is") and "smaller than layer2's" in f for f in out)


def test_explain_matches_the_formulas_and_autograd(cli):
    r = cli("explain", "--x", 1.5, "--y", 0.5, "--w1", 0.8, "--w2", -0.4, "--lr", 0.1, "--format", "json")
    doc = json.loads(r.stdout)
    assert set(doc) == {"inputs", "forward", "chain_rule", "autograd", "update", "history", "diverged_at"}
    assert doc["diverged_at"] is None
    x, y, w1, w2 = 1.5, 0.5, 0.8, -0.4
    z1 = w1 * x
    y_hat = w2 * z1
    assert doc["forward"] == pytest.approx({"z1": z1, "y_hat": y_hat, "loss": 0.5 * (y - y_hat) ** 2})
    assert doc["chain_rule"]["w2"] == pytest.approx(-(y - y_hat) * z1)
    assert doc["chain_rule"]["w1"] == pytest.approx(-(y - y_hat) * w2 * x)
    t1 = torch.tensor(w1, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor(w2, dtype=torch.float64, requires_grad=True)
    (0.5 * (y - t2 * t1 * x) ** 2).backward()
    assert doc["autograd"] == pytest.approx({"w1": t1.grad.item(), "w2": t2.grad.item()})
    u = doc["update"]
    assert u["w1"] == pytest.approx(w1 - 0.1 * doc["chain_rule"]["w1"])
    assert u["loss_after"] == pytest.approx(0.5 * (y - u["w2"] * u["w1"] * x) ** 2)


def test_explain_steps_show_the_loss_falling(cli):
    doc = json.loads(cli("explain", "--steps", 20, "--format", "json").stdout)
    losses = [h["loss"] for h in doc["history"]]
    assert len(losses) == 20 and all(b < a for a, b in zip(losses, losses[1:]))
    table = cli("explain", "--steps", 3).stdout
    for s in ("1. forward", "∂L/∂w1", "−(y − ŷ)·w2·x", "−(y − ŷ)·z1", "autograd", "w ← w − η·∂L/∂w", "3 steps of SGD"):
        assert s in table
    # each row: the loss before the step's update beside the weights after it, and the headers say so
    lines = table.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["step"])
    assert lines[head].split() == ["step", "loss", "before", "∂L/∂w1", "∂L/∂w2", "w1", "after", "w2", "after"]
    rows = [line.split() for line in lines[head + 1:head + 4]]
    hist = doc["history"]
    for row, h in zip(rows, hist):
        assert float(row[1]) == pytest.approx(h["loss"], rel=1e-4)  # before: the loss at the step's start
        assert float(row[4]) == pytest.approx(h["w1"], rel=1e-4)  # after: the weight the update leaves
    assert float(rows[1][1]) == pytest.approx(hist[0]["loss_after"], rel=1e-4)  # step 2 starts where 1 ends
    assert "before each update, the weights after it" in table


def test_train_steps_trains_with_the_configs_own_options_as_train_does(cli, tmp_path):
    """inspect-grads --train-steps N == train --steps N --save, then inspect-grads --checkpoint: the same
    clipping, schedule and precision, so the same weights and the same next gradients, bit for bit."""
    from conftest import CONFIGS

    sets = ["--set", "train.clip_grad_norm=0.3", "--set", "scheduler={name: step, step_size: 2, gamma: 0.5}",
            "--set", "precision=bf16", "--set", "train.steps=7"]
    reg = CONFIGS / "regression.yaml"
    ck = tmp_path / "c.pt"
    assert cli("train", "-c", reg, *sets, "--save", ck, "-q").exit_code == 0
    via_train = json.loads(cli("inspect-grads", "-c", reg, *sets, "--checkpoint", ck, "--format", "json").stdout)
    for spelling in ("--train-steps", "--steps"):
        here = json.loads(cli("inspect-grads", "-c", reg, *sets, spelling, 7, "--format", "json").stdout)
        assert here["batch"] == via_train["batch"] == {"index": 7, "size": 64}
        assert here["loss"] == via_train["loss"]
        assert all(here["params"][n]["grad"] == via_train["params"][n]["grad"] for n in here["params"])
    plain = json.loads(cli("inspect-grads", "-c", reg, "--set", "train.steps=7", "--train-steps", 7,
                           "--format", "json").stdout)
    assert plain["loss"] != via_train["loss"]  # the options matter: without them the weights differ

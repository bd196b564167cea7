"""train's per-layer diagnostics and its warnings, against numbers computed here by hand."""

import json
import math

import pytest
import torch

from backprop_cli.core import health
from backprop_cli.core.build import build_run
from backprop_cli.config import load_config
from backprop_cli.core.diagnostics import Diagnostics
from backprop_cli.core.engine import run_steps
from backprop_cli.core.health import HealthMonitor
from backprop_cli.core.records import StepRecord, is_logging_step
from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"
DUE = {1, 4, 7, 9}


def deep_run(activation, *sets, widths="[12, 9, 7]"):
    cfg = load_config(REG, ["device=cpu", "model.hidden_size=null", f"model.hidden_sizes={widths}",
                            f"model.activation={activation}", "data.samples=64", "data.batch_size=16",
                            "train.steps=9", "optimizer.lr=0.01", *sets])
    return build_run(cfg)


def oracle(run, steps, due):
    """A plain loop over the same model and batches; on due steps the hidden outputs come from forward
    hooks on the activation module and every statistic is computed here, element by element."""
    model, opt, loss_fn = run.model, run.optimizer, run.loss_fn
    seen = []
    model.activation.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    names = [n for n, _ in model.named_parameters()]
    out = []
    for i in range(steps):
        x, y = run.batches(i)
        seen.clear()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        if i + 1 not in due:
            out.append(None)
            continue
        layers = {}
        for k, a in enumerate(seen, start=1):
            rows, units = a.shape
            values = a.flatten().tolist()
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            stats = {"mean": mean, "std": std}
            cols = [[a[r, u].item() for r in range(rows)] for u in range(units)]
            name = run.cfg.model.activation.name
            if name == "relu":
                stats["dead_fraction"] = sum(all(v == 0 for v in col) for col in cols) / units
            elif name == "gelu":
                stats["dead_fraction"] = sum(all(abs(v) <= 1e-3 for v in col) for col in cols) / units
            elif name == "tanh":
                stats["saturated_fraction"] = sum(abs(v) > 0.97 for v in values) / len(values)
            elif name == "sigmoid":
                stats["saturated_fraction"] = sum(v < 0.03 or v > 0.97 for v in values) / len(values)
            layers[f"layer{k}"] = stats
        after = dict(model.named_parameters())
        out.append({
            "activations": layers,
            "grad_to_weight": {n: (grads[n].norm() / before[n].norm()).item() for n in names},
            "update_ratios": {n: ((after[n].detach() - before[n]).norm() / before[n].norm()).item() for n in names},
        })
    return out


def with_bad_units(run):
    """Push some units of every hidden layer into their flat region (so the fractions are not all 0)."""
    with torch.no_grad():
        for layer in run.model.layers[:-1]:
            if run.cfg.model.activation.name in ("relu", "gelu", "leaky_relu"):
                layer.bias[:3] = -50.0
            else:
                layer.bias[:3] = 50.0
                layer.weight[3:5] *= 20.0
    return run


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("read_every", [1, 4])
def test_diagnostics_equal_a_hand_computed_oracle(activation, read_every):
    run = with_bad_units(deep_run(activation))
    probe = Diagnostics.of(run.model, activation, DUE.__contains__)
    records = list(run_steps(run.loop(), run.steps, guard=run.guard, probe=probe, read_every=read_every))
    expected = oracle(with_bad_units(deep_run(activation)), run.steps, DUE)
    assert [r.step for r in records] == list(range(1, 10))
    for rec, exp in zip(records, expected):
        if exp is None:
            assert rec.activations is None and rec.grad_to_weight is None and rec.update_ratios is None
            continue
        assert list(rec.activations) == ["layer1", "layer2", "layer3"]
        for layer, stats in exp["activations"].items():
            assert rec.activations[layer] == pytest.approx(stats, rel=1e-4, abs=1e-6), (rec.step, layer)
        assert rec.grad_to_weight == pytest.approx(exp["grad_to_weight"], rel=1e-4)
        assert rec.update_ratios == pytest.approx(exp["update_ratios"], rel=1e-4)
    fractions = [s.get("dead_fraction", s.get("saturated_fraction")) for r in records if r.activations
                 for s in r.activations.values()]
    if activation == "leaky_relu":
        assert fractions == [None] * len(fractions)
    else:
        assert any(0 < f < 1 for f in fractions)  # the oracle compared real, non-trivial fractions


def test_the_probe_runs_on_due_steps_only(monkeypatch):
    """Other steps pay nothing: no hidden outputs kept, nothing measured, nothing cloned."""
    run = deep_run("relu")
    calls = {"measure": 0, "keep_hidden": []}
    probe = Diagnostics.of(run.model, "relu", DUE.__contains__)
    real_measure, real_forward = probe.measure, run.model.forward

    def measure(*a, **kw):
        calls["measure"] += 1
        return real_measure(*a, **kw)

    def forward(x, keep_hidden=False):
        calls["keep_hidden"].append(keep_hidden)
        return real_forward(x, keep_hidden=keep_hidden)

    monkeypatch.setattr(probe, "measure", measure)
    monkeypatch.setattr(run.model, "forward", forward)
    clones = []
    real_clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda t, *a, **kw: clones.append(1) or real_clone(t, *a, **kw))
    list(run_steps(run.loop(), run.steps, guard=run.guard, probe=probe))
    assert calls["measure"] == len(DUE)
    assert [i + 1 for i, k in enumerate(calls["keep_hidden"]) if k] == sorted(DUE)
    assert len(clones) == len(DUE) * len(list(run.model.parameters()))


def test_records_equal_without_the_probe():
    """Measuring changes nothing the run computes."""
    a = deep_run("tanh")
    b = deep_run("tanh")
    probe = Diagnostics.of(a.model, "tanh", lambda s: True)
    with_probe = [r.loss for r in run_steps(a.loop(), a.steps, guard=a.guard, probe=probe)]
    without = [r.loss for r in run_steps(b.loop(), b.steps, guard=b.guard)]
    assert with_probe == without


def test_logging_steps():
    assert [s for s in range(1, 26) if is_logging_step(s, 1, 10, 25)] == [1, 10, 20, 25]
    assert [s for s in range(13, 26) if is_logging_step(s, 13, 10, 25)] == [13, 20, 25]


# --------------------------------------------------------------------------- the warnings


def rec(step, activations=None, grad_norms=None, update_ratios=None, skipped=False):
    return StepRecord(step=step, loss=1.0, grad_norm=1.0, grad_norms=grad_norms or {"layer1.weight": 1.0,
                      "layer2.weight": 1.0}, lr=0.1, time=0.0, skipped=skipped,
                      activations=activations if activations is not None else {"layer1": {"mean": 0, "std": 1}},
                      grad_to_weight={}, update_ratios=update_ratios or {})


def test_more_than_half_dead_or_saturated_warns_once_per_layer():
    m = HealthMonitor()
    assert m.record(rec(1, {"layer1": {"dead_fraction": 0.5}, "layer2": {"dead_fraction": 0.1}})) == []
    new = m.record(rec(2, {"layer1": {"dead_fraction": 0.53}, "layer2": {"dead_fraction": 0.1}}))
    assert len(new) == 1 and new[0].startswith("layer1: 53% of the units dead at step 2") and "try" in new[0]
    assert m.record(rec(3, {"layer1": {"dead_fraction": 0.9}, "layer2": {"dead_fraction": 0.1}})) == []
    new = m.record(rec(4, {"layer1": {"dead_fraction": 0.9}, "layer2": {"saturated_fraction": 0.75}}))
    assert len(new) == 1 and new[0].startswith("layer2: 75% of the outputs saturated at step 4")
    assert len(m.warnings) == 2
    # the advice leaves out what the run already does
    assert new[0].endswith("try model.init: xavier, a lower optimizer.lr, or inputs scaled to mean 0 and std 1")
    kaiming = HealthMonitor("relu", "kaiming").record(rec(1, {"layer1": {"dead_fraction": 0.9}}))[0]
    assert kaiming.endswith("try a lower optimizer.lr, or model.activation: leaky_relu")


def test_gradient_norm_gaps_against_the_last_layer():
    m = HealthMonitor()
    norms = {"layer1.weight": 3e-4, "layer1.bias": 4e-4, "layer2.weight": 0.9, "layer3.weight": 1.0}
    # layer1's norm is 5e-4: 2,000× smaller than layer3's; layer2 is fine
    new = m.record(rec(1, grad_norms=norms))
    assert len(new) == 1 and new[0].startswith("layer1: gradient norm 0.0005, over 1,000× smaller than layer3's (1)")
    assert "vanishing" in new[0]
    assert m.record(rec(2, grad_norms=norms)) == []
    new = m.record(rec(3, grad_norms={"layer1.weight": 1e-4, "layer2.weight": 2000.0, "layer3.weight": 1.0}))
    assert len(new) == 1 and new[0].startswith("layer2: gradient norm 2e+03, over 1,000× larger") and "exploding" in new[0]
    # exactly 1000× apart is not beyond the threshold
    assert HealthMonitor().record(rec(1, grad_norms={"layer1.weight": 1e-3, "layer2.weight": 1.0})) == []


def test_update_ratio_out_of_range_for_100_steps():
    m = HealthMonitor()
    steps = [1] + list(range(10, 201, 10))
    warned = {}
    for s in steps:
        ratios = {"layer1.weight": 0.5, "layer2.weight": 1e-6 if s != 50 else 1e-3}
        for w in m.record(rec(s, update_ratios=ratios)):
            warned[w.split(":")[0]] = (s, w)
    # layer1.weight: above 1e-1 on every logging step from 1: steps 1…100 are 100 steps
    assert warned["layer1.weight"][0] == 100 and "above 0.1 since step 1" in warned["layer1.weight"][1]
    # layer2.weight was back in range at step 50, so its stretch starts again at 60: warned at 160
    assert warned["layer2.weight"][0] == 160 and "below 1e-05 since step 60" in warned["layer2.weight"][1]
    assert len(m.warnings) == 2


def test_skipped_and_non_logging_steps_are_left_out():
    m = HealthMonitor()
    bad = {"layer1": {"dead_fraction": 1.0}}
    assert m.record(rec(1, bad, skipped=True)) == []
    plain = rec(2, bad)
    plain.activations = None
    assert m.record(plain) == []
    assert health.layer_norms({"layer1.weight": 3.0, "layer1.bias": 4.0, "layer2.weight": 1.0}) == {
        "layer1": 5.0, "layer2": 1.0}


# --------------------------------------------------------------------------- train, end to end


def test_train_warns_in_the_table_and_the_json_summary(cli, tmp_path):
    """A 6-layer sigmoid net: the first layers' gradients vanish."""
    sets = ["--set", "model.hidden_size=null", "--set", "model.hidden_sizes=[32,32,32,32,32,32]",
            "--set", "model.activation=sigmoid"]
    r = cli("train", "-c", REG, *sets, "--steps", 20, "--log-every", 10, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    warnings = doc["summary"]["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("layer1, layer2, layer3: gradient norm")
    assert "smaller than layer7's" in warnings[0] and "at step 1" in warnings[0]
    assert f"warning: {warnings[0]}" in r.stderr  # in the table (rows go to stderr with --format json)
    r = cli("train", "-c", REG, "--steps", 20, "--format", "json")
    assert json.loads(r.stdout)["summary"]["warnings"] == []


def test_metrics_files_carry_the_diagnostics(cli, tmp_path):
    from backprop_cli.io.metrics_read import read_metrics

    jl, csv = tmp_path / "m.jsonl", tmp_path / "m.csv"
    for path in (jl, csv):
        r = cli("train", "-c", REG, "--steps", 12, "--log-every", 5, "--metrics", path, "-q")
        assert r.exit_code == 0, r.output
    a, b = read_metrics(jl), read_metrics(csv)
    assert [r["step"] for r in a if "activations" in r] == [1, 5, 10, 12]
    assert list(a[0]["activations"]) == ["layer1"]
    assert set(a[0]["activations"]["layer1"]) == {"mean", "std", "saturated_fraction"}  # tanh
    assert set(a[0]["update_ratios"]) == set(a[0]["grad_to_weight"]) == set(a[0]["grad_norms"])
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for key in ("activations", "grad_to_weight", "update_ratios"):
            assert (key in x) == (key in y)
            if key in x:
                assert json.dumps(x[key], sort_keys=True) == json.dumps(y[key], sort_keys=True)

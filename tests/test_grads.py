"""Autograd vs the hand-written chain rule vs finite differences, for every activation and loss."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from backprop_cli.core import components
from backprop_cli.core import grads as G
from backprop_cli.config import ACTIVATION_NAMES, LOSS_NAMES, load_config
from backprop_cli.runs.inspection import check_gradients, prepare
from conftest import CONFIGS


def cfg_for(activation, loss, bias=True, extra=()):
    sets = ["device=cpu", f"model.activation={activation}", f"loss={loss}", "model.output_size=3",
            f"model.bias={str(bias).lower()}", "data.samples=16", "data.batch_size=8", *extra]
    if loss in ("cross_entropy", "bce_with_logits"):
        sets.append("data.targets=classes")
    return load_config(CONFIGS / "seed.yaml", sets)


def autograd_grads(run, index=0):
    x, y = run.batches(index)
    run.model.zero_grad(set_to_none=True)
    run.loss_fn(run.model(x), y).backward()
    return {n: p.grad.clone() for n, p in run.model.named_parameters()}


DEPTHS = {1: [], 2: ["model.hidden_size=null", "model.hidden_sizes=[7, 5]"],
          4: ["model.hidden_size=null", "model.hidden_sizes=[6, 5, 4, 6]"]}


@pytest.mark.parametrize("activation,loss,bias,depth",
                         list(itertools.product(ACTIVATION_NAMES, LOSS_NAMES, [True, False], DEPTHS)))
def test_every_activation_and_loss_passes_at_every_depth(activation, loss, bias, depth):
    run, _ = prepare(cfg_for(activation, loss, bias, DEPTHS[depth]))
    result = check_gradients(run, 0)
    assert result["pass"], result["params"]
    layers = [f"layer{k}" for k in range(1, depth + 2)]
    names = {f"{layer}.weight" for layer in layers} | ({f"{layer}.bias" for layer in layers} if bias else set())
    assert set(result["params"]) == names
    for p in result["params"].values():
        assert p["finite_diff"]["checked"] == p["elements"]  # small model: every element


@pytest.mark.parametrize("extra", [
    ["model.activation.approximate=tanh", "model.activation.name=gelu"],
    ["model.activation.name=leaky_relu", "model.activation.negative_slope=0.3"],
    ["loss.name=huber", "loss.delta=0.05"],
    ["loss.name=smooth_l1", "loss.beta=0"],
    ["loss.name=smooth_l1", "loss.beta=0.2"],
    ["loss.name=mse", "loss.reduction=sum"],
])
def test_options_are_differentiated_too(extra):
    run, _ = prepare(cfg_for("tanh", "mse", extra=extra))
    assert check_gradients(run, 0)["pass"]


def test_label_smoothing_and_sum_reduction_for_cross_entropy():
    run, _ = prepare(cfg_for("relu", "cross_entropy", extra=["loss.label_smoothing=0.2", "loss.reduction=sum"]))
    assert check_gradients(run, 0)["pass"]


def test_chain_rule_equals_autograd_directly():
    cfg = cfg_for("sigmoid", "bce_with_logits")
    run, _ = prepare(cfg)
    auto = autograd_grads(run)
    x, y = run.batches(0)
    weights = {n: p.detach().double() for n, p in run.model.named_parameters()}
    manual = G.manual_backward(weights, x.double(), y.double(), cfg.model.activation, cfg.loss)
    for n in auto:
        torch.testing.assert_close(manual[n].float(), auto[n], rtol=1e-5, atol=1e-7)


def test_finite_differences_of_a_known_function():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    est = G.finite_differences(lambda: (w**3).sum(), {"w": w}, {"w": None})
    torch.testing.assert_close(est["w"], 3 * w**2, rtol=1e-8, atol=1e-8)
    est = G.finite_differences(lambda: (w**3).sum(), {"w": w}, {"w": torch.tensor([2])})
    assert est["w"].shape == (1,) and abs(est["w"].item() - 0.75) < 1e-8
    assert w.tolist() == [1.0, -2.0, 0.5]  # restored


def test_a_wrong_activation_derivative_fails(monkeypatch, cli, tmp_path):
    tanh = components.ACTIVATIONS["tanh"]
    monkeypatch.setitem(components.ACTIVATIONS, "tanh", replace(tanh, derivative=lambda z, a, o: 1 - a))  # 1 - a²
    run, _ = prepare(cfg_for("tanh", "mse"))
    result = check_gradients(run, 0)
    assert not result["pass"]
    assert not result["params"]["layer1.weight"]["pass"] and result["params"]["layer2.weight"]["pass"]
    r = cli("check-grads", "-c", CONFIGS / "seed.yaml", "--set", "model.activation=tanh", "--format", "json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["pass"] is False and doc["params"]["layer1.weight"]["pass"] is False
    assert doc["params"]["layer1.weight"]["finite_diff"]["max_abs"] < 1e-6  # autograd itself is right


def test_a_wrong_loss_gradient_fails(monkeypatch):
    mse = components.LOSSES["mse"]
    monkeypatch.setitem(components.LOSSES, "mse", replace(mse, gradient=lambda yh, y, s: (yh - y) / yh.numel()))  # no 2
    run, _ = prepare(cfg_for("relu", "mse"))
    result = check_gradients(run, 0)
    assert not result["pass"] and all(not p["pass"] for p in result["params"].values())


def test_large_models_sample_elements(tmp_path):
    cfg = load_config(CONFIGS / "seed.yaml", ["device=cpu", "model.input_size=10", "model.hidden_size=3000",
                                                 "data.samples=8", "data.batch_size=8"])
    run, _ = prepare(cfg)
    result = check_gradients(run, 0)
    assert result["pass"]
    assert result["params"]["layer1.weight"]["finite_diff"]["checked"] == 256
    assert result["params"]["layer2.bias"]["finite_diff"]["checked"] == 1
    result = check_gradients(run, 0, samples=10)
    assert result["params"]["layer1.weight"]["finite_diff"]["checked"] == 10


def test_grad_statistics_against_torch():
    run, _ = prepare(cfg_for("relu", "mse"))
    auto = autograd_grads(run)
    stats = G.grad_statistics(list(run.model.named_parameters()))
    for n, p in run.model.named_parameters():
        g = auto[n]
        s = stats[n]
        assert s["shape"] == list(p.shape)
        assert s["norm"] == pytest.approx(g.norm().item(), rel=1e-6)
        assert s["mean"] == pytest.approx(g.mean().item(), rel=1e-5, abs=1e-9)
        assert s["std"] == pytest.approx(np.std(g.numpy()), rel=1e-4, abs=1e-9)
        assert s["min"] == g.min().item() and s["max"] == g.max().item()
        assert s["abs_max"] == g.abs().max().item()
        assert s["zero_fraction"] == pytest.approx((g == 0).float().mean().item())
        assert s["grad_to_weight"] == pytest.approx(g.norm().item() / p.norm().item(), rel=1e-6)


def test_compare_uses_the_dtype_tolerance():
    a = torch.tensor([1.0, 2.0])
    assert G.compare(a, a.double() * (1 + 1e-5), torch.float32)["pass"]
    assert not G.compare(a, a.double() * (1 + 1e-2), torch.float32)["pass"]
    assert not G.compare(a, a.double() * (1 + 1e-5), torch.float64)["pass"]
    r = G.compare(a, torch.tensor([1.0, 2.5]), torch.float32)
    assert r["max_abs"] == pytest.approx(0.5) and r["max_rel"] == pytest.approx(0.2)


def test_a_check_that_cannot_resolve_the_gradients_fails_and_says_why(cli):
    """Targets of 1e30: the float32 loss overflows, and float64 differences of a 1e60 loss cannot
    resolve gradients of 1e28. Neither may pass (it did: the round-off bound came from an inf loss)."""
    r = cli("check-grads", "-c", CONFIGS / "regression.yaml", "--set", "data.noise=1e30", "--format", "json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["pass"] is False and doc["loss"] is None
    overflow = [p for p in doc["problems"] if p.startswith("the loss is inf in float32")]
    assert len(overflow) == 1 and "data.standardize_target: true" in overflow[0]  # mse: the targets too
    assert all(not p["pass"] and p["finite_diff"]["resolved"] is False for p in doc["params"].values())
    ok = json.loads(cli("check-grads", "-c", CONFIGS / "regression.yaml", "--format", "json").stdout)
    assert set(ok) == {"loss", "pass", "params", "problems"}
    assert set(ok["params"]["layer1.weight"]["finite_diff"]) == {"max_abs", "max_rel", "checked", "resolved"}
    assert ok["pass"] and ok["problems"] == [] and all(p["finite_diff"]["resolved"] for p in ok["params"].values())


def test_the_scaling_advice_names_only_keys_the_task_accepts():
    """check-grads' overflow advice: standardize_target only for regression (it compared the loss section
    with names, which was never equal, and advised a key the config refuses for classification)."""
    from backprop_cli.runs.inspection import scaling_advice
    for loss, targets in (("cross_entropy", "classes"), ("bce_with_logits", "classes"), ("mse", "teacher")):
        cfg = load_config(CONFIGS / "seed.yaml", [f"loss={loss}", f"data.targets={targets}", "model.output_size=2"])
        advice = scaling_advice(cfg)
        overrides = [f"loss={loss}", f"data.targets={targets}", "model.output_size=2",
                     *(f"{kv.strip().replace(': ', '=')}" for kv in advice.split(","))]
        load_config(CONFIGS / "seed.yaml", overrides)  # every key advised is one the config accepts
        assert ("standardize_target" in advice) == (loss == "mse")

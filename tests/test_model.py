"""Depth is data: layer1 … layerN from model.hidden_sizes, with the chosen init."""

import json
import math

import pytest
import torch

from backprop_cli.config import validate
from backprop_cli.errors import ConfigError
from backprop_cli.core.model import build_model, initial_gain
from conftest import CONFIGS

BASE = {"data": {"kind": "synthetic", "samples": 8, "batch_size": 4}}


def model_cfg(**model):
    return validate({**BASE, "model": {"input_size": 5, "output_size": 2, **model}}).model


def test_hidden_sizes_make_named_layers_in_order():
    net = build_model(model_cfg(hidden_sizes=[7, 6, 4]), seed=0)
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    assert shapes == {"layer1.weight": (7, 5), "layer1.bias": (7,), "layer2.weight": (6, 7), "layer2.bias": (6,),
                      "layer3.weight": (4, 6), "layer3.bias": (4,), "layer4.weight": (2, 4), "layer4.bias": (2,)}
    x = torch.randn(3, 5)
    h = x
    for k in (1, 2, 3):
        h = torch.relu(getattr(net, f"layer{k}")(h))
    assert torch.equal(net(x), net.layer4(h))


def test_one_hidden_layer_is_the_classic_net_with_torchs_init():
    net = build_model(model_cfg(hidden_size=20), seed=3)
    torch.manual_seed(3)
    l1, l2 = torch.nn.Linear(5, 20), torch.nn.Linear(20, 2)
    assert torch.equal(net.layer1.weight, l1.weight) and torch.equal(net.layer2.bias, l2.bias)
    assert build_model(model_cfg(hidden_sizes=[20]), seed=3).state_dict().keys() == net.state_dict().keys()


@pytest.mark.parametrize("init,activation", [("kaiming", "relu"), ("xavier", "tanh"), ("kaiming", "tanh")])
def test_init_scales_follow_the_formulas(init, activation):
    cfg = model_cfg(hidden_sizes=[400, 300], activation=activation, init=init)
    net = build_model(cfg, seed=0)
    gain = torch.nn.init.calculate_gain(activation)
    assert initial_gain(cfg) == pytest.approx(gain)
    for i, layer in enumerate(net.layers):
        g = gain if i < len(net.layers) - 1 else 1.0
        fan_out, fan_in = layer.weight.shape
        want = g / math.sqrt(fan_in) if init == "kaiming" else g * math.sqrt(2.0 / (fan_in + fan_out))
        assert layer.weight.std().item() == pytest.approx(want, rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
    custom = build_model(model_cfg(hidden_sizes=[400, 300], init="kaiming", init_gain=0.5), seed=0)
    assert custom.layer2.weight.std().item() == pytest.approx(0.5 / math.sqrt(400), rel=0.05)


@pytest.mark.parametrize("model,fragment", [
    ({"hidden_sizes": []}, "model.hidden_sizes: List should have at least 1 item"),
    ({"hidden_sizes": [4, 0]}, "model.hidden_sizes.1: must be greater than 0 (got 0)"),
    ({"hidden_size": 4, "hidden_sizes": [4]}, "model.hidden_sizes: give model.hidden_size or model.hidden_sizes, not both"),
    ({}, "model.hidden_size: required key is missing"),
    ({"hidden_size": [64, 64]}, "model.hidden_size: must be a valid integer"),
    ({"hidden_size": 4, "init_gain": 2.0}, "model.init_gain: init_gain needs model.init: xavier or kaiming"),
    ({"hidden_size": 4, "init": "orthogonal"}, "model.init: expected one of: 'default', 'xavier' or 'kaiming'"),
])
def test_bad_depth_settings_are_one_line_each(model, fragment):
    with pytest.raises(ConfigError) as e:
        validate({**BASE, "model": {"input_size": 5, "output_size": 2, **model}})
    assert len(e.value.problems) == 1 and fragment in e.value.problems[0], e.value.problems


def test_every_command_runs_at_depth(cli, tmp_path):
    sets = ["--set", "model.hidden_size=null", "--set", "model.hidden_sizes=[16, 16, 16]"]
    reg = CONFIGS / "regression.yaml"
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", reg, "--steps", 5, "--metrics", m, *sets)
    assert r.exit_code == 0, r.output
    assert "MLP 8 → 16 → 16 → 16 → 2" in r.stdout
    rec = json.loads(m.read_text().splitlines()[0])
    assert set(rec["grad_norms"]) == {f"layer{k}.{p}" for k in range(1, 5) for p in ("weight", "bias")}
    assert cli("inspect-grads", "-c", reg, "--format", "json", *sets).exit_code == 0
    assert cli("check-grads", "-c", reg, *sets).exit_code == 0
    r = cli("compare-optimizers", "-c", reg, "--steps", 5, "--format", "json", *sets)
    assert r.exit_code == 0 and len(json.loads(r.stdout)["runs"]) == 2

"""explain --config: the configured net's chain rule layer by layer, against autograd computed here,
independently (the test builds its own nn.Linear layers from the same seed and reads its own CSV rows)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import CONFIGS, write


def held_out_csv(tmp_path, rows=24, classes=False):
    """A data set made here (not one of the repository's): 3 features and a target."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, 3))
    lines = ["a,b,c,y"]
    for r in x:
        y = ("lo", "mid", "hi")[int(np.digitize(r.sum(), [-0.5, 0.5]))] if classes else f"{np.sin(r).sum():.6f}"
        lines.append(",".join(f"{v:.6f}" for v in r) + f",{y}")
    write(tmp_path / "held_out.csv", "\n".join(lines) + "\n")
    return x


CASES = {
    # depth 3 (three linear layers): tanh and MSE with biases; ReLU and cross-entropy without
    "tanh-mse": ("tanh", "mse", True, 1, False),
    "relu-cross_entropy": ("relu", "cross_entropy", False, 2, True),
}


def config(tmp_path, activation, loss, bias, classes):
    out = 3 if classes else 1
    return write(tmp_path / "c.yaml", f"""seed: 3
model: {{input_size: 3, hidden_sizes: [6, 5], output_size: {out}, activation: {activation}, bias: {str(bias).lower()}}}
loss: {loss}
data: {{kind: csv, path: held_out.csv, target: y, batch_size: 8, shuffle: false}}
""")


def oracle(x_rows, y_rows, seed, widths, activation, loss, bias):
    """Autograd on layers built here: torch.manual_seed(seed), then nn.Linear per layer in order (what
    the package's net must be), float64, loss.backward()."""
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b, bias=bias) for a, b in zip(widths, widths[1:])]
    layers = [layer.double() for layer in layers]
    f = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    h = torch.tensor(x_rows, dtype=torch.float32).double()  # the data is float32, as read
    for layer in layers[:-1]:
        h = f(layer(h))
    out = layers[-1](h)
    if loss == "mse":
        value = nn.functional.mse_loss(out, torch.tensor(y_rows, dtype=torch.float32).double().reshape(-1, 1))
    else:
        value = nn.functional.cross_entropy(out, torch.tensor(y_rows))
    value.backward()
    return float(value.detach()), layers


@pytest.mark.parametrize("case", CASES)
def test_per_layer_weight_gradients_equal_autograd_on_a_held_out_set_at_depth_3(case, tmp_path, cli, monkeypatch):
    activation, loss, bias, batch, classes = CASES[case]
    held_out_csv(tmp_path, classes=classes)
    cfg = config(tmp_path, activation, loss, bias, classes)
    monkeypatch.chdir(tmp_path)
    r = cli("explain", "--config", cfg, "--batch", batch, "--sample", 5, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    rows = slice(8 * batch, 8 * batch + 8)  # shuffle: false, batch_size 8
    text = (tmp_path / "held_out.csv").read_text().splitlines()[1:]
    x = np.array([[float(v) for v in line.split(",")[:3]] for line in text])  # the numbers as written
    if classes:
        names = sorted({line.split(",")[-1] for line in text})  # classes in sorted order
        y = [names.index(line.split(",")[-1]) for line in text][rows]
    else:
        y = [float(line.split(",")[-1]) for line in text][rows]
    loss_value, layers = oracle(x[rows], y, 3, [3, 6, 5, 3 if classes else 1], activation, loss, bias)
    assert doc["order"] == "output_to_input" and [layer["name"] for layer in doc["layers"]] == ["layer3", "layer2", "layer1"]
    assert doc["loss"] == pytest.approx(loss_value, rel=1e-12) and doc["batch"] == batch and doc["sample"] == 5
    for entry, layer in zip(doc["layers"], layers[::-1]):
        want_w = layer.weight.grad
        got_w = torch.tensor(entry["grad_weight"], dtype=torch.float64)
        assert got_w.shape == want_w.shape  # [out][in]
        torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(torch.tensor(entry["autograd_weight"], dtype=torch.float64), want_w,
                                   rtol=1e-12, atol=1e-14)
        if bias:
            torch.testing.assert_close(torch.tensor(entry["grad_bias"], dtype=torch.float64), layer.bias.grad,
                                       rtol=1e-12, atol=1e-14)
        else:
            assert entry["grad_bias"] is None and entry["autograd_bias"] is None
        assert 0 <= entry["max_abs_diff"] < 1e-12
        out_w, in_w = want_w.shape
        s = entry["shape"]
        assert s["weight"] == [out_w, in_w] and s["z"] == [8, out_w] and s["delta"] == [8, out_w]
        assert s["h_prev"] == [8, in_w] and np.array(entry["delta"]).shape == (8, out_w)
        # dW_k = δ_kᵀ·h_(k−1) with the document's own δ and h: the chain rule it shows is the one it used
        torch.testing.assert_close(torch.tensor(entry["delta"], dtype=torch.float64).T
                                   @ torch.tensor(entry["h_prev"], dtype=torch.float64), want_w,
                                   rtol=1e-10, atol=1e-12)
    # the first layer's input is the batch itself
    assert np.allclose(doc["layers"][-1]["h_prev"], x[rows], atol=1e-6)


def test_the_table_walks_from_the_loss_back_to_layer1(cli):
    r = cli("explain", "--config", CONFIGS / "seed.yaml")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.index("layer2 (output layer)") < out.index("layer1\n")
    for needed in ("z2", "dL/dŷ", "2(ŷ − y)/5", "δ2", "dW2", "δ2ᵀ·h1", "db2", "layer2.weight.grad",
                   "(δ2·W2) ⊙ ReLU′(z1)", "dW1", "δ1ᵀ·x", "[20, 10]", "max |hand − autograd|", "summary"):
        assert needed in out, needed
    # the seed net's numbers: its loss, as train measures it on the same batch (float32 vs float64)
    t = cli("train", "--config", CONFIGS / "seed.yaml", "--format", "json", "-q")
    loss = json.loads(t.stdout)["summary"]["last_loss"]  # one step: the loss of batch 0 at the seeded init
    doc = json.loads(cli("explain", "-c", CONFIGS / "seed.yaml", "--format", "json").stdout)
    assert doc["loss"] == pytest.approx(loss, rel=1e-6)
    assert max(layer["max_abs_diff"] for layer in doc["layers"]) < 1e-12


def test_a_sample_outside_the_batch_is_one_line(cli):
    r = cli("explain", "--config", CONFIGS / "seed.yaml", "--sample", 5)
    assert r.exit_code == 2 and r.stderr.count("error: ") == 1
    assert "batch 0 has 5 rows, so the sample is 0 to 4 (got 5)" in r.stderr


def test_plain_explain_keeps_the_scalar_example(cli):
    r = cli("explain", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["inputs"]["w1"] == 0.5


@pytest.mark.parametrize("width", [60, 100])
def test_the_table_fits_the_width_and_shows_every_difference(cli, width):
    from rich.cells import cell_len

    from backprop_cli.render.console import fmt

    r = cli("explain", "-c", CONFIGS / "deep_relu.yaml", "--sample", 3, env={"COLUMNS": str(width)})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    doc = json.loads(cli("explain", "-c", CONFIGS / "deep_relu.yaml", "--sample", 3, "--format", "json").stdout)
    flat = " ".join(r.stdout.split())
    for layer in doc["layers"]:
        assert f"{layer['name']}: max |hand − autograd| = {fmt(layer['max_abs_diff'])}" in flat
    assert fmt(doc["layers"][0]["z"][3][0]) in flat  # row 3 of the output layer's z

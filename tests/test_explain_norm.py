"""explain --config through norm layers, dropout and skips: every gradient it shows, by hand and its
autograd column, against autograd computed here, independently (the test builds its own nn.Linear,
nn.BatchNorm1d and nn.LayerNorm modules from the same seed, in the order the package must build them,
and reads its own CSV rows). The mode is training mode: batch norm with the batch's own statistics,
dropout with the fixed keep-mask check-grads uses."""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from test_explain_config import held_out_csv

from conftest import write

ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}

CASES = {
    # name: (hidden sizes, norm, dropout, residual, activation, classes)
    "batch-1": ([6], "batch", 0.0, False, "tanh", False),
    "layer-2": ([6, 5], "layer", 0.0, False, "sigmoid", True),
    "dropout-2": ([6, 6], "none", 0.3, False, "relu", False),
    "residual-3": ([6, 6, 6], "none", 0.0, True, "tanh", False),
    "batch-dropout-residual-3": ([6, 6, 6], "batch", 0.25, True, "sigmoid", True),
    "layer-dropout-residual-2": ([5, 5], "layer", 0.5, True, "relu", False),
}


def config(tmp_path, sizes, norm, dropout, residual, activation, classes):
    out = 3 if classes else 1
    return write(tmp_path / "c.yaml", f"""seed: 5
model: {{input_size: 3, hidden_sizes: {sizes}, output_size: {out}, activation: {activation}, norm: {norm},
         dropout: {dropout}, residual: {str(residual).lower()}}}
loss: {"cross_entropy" if classes else "mse"}
data: {{kind: csv, path: held_out.csv, target: y, batch_size: 8, shuffle: false}}
""")


def oracle(x, y, sizes, norm, p, residual, activation, classes, masks):
    """torch.manual_seed(5), then per hidden block an nn.Linear (no bias under batch norm) and its norm
    module, then the last nn.Linear; float64, training mode, the given keep-masks; loss.backward().
    Returns the loss, the modules and each linear layer's output (its .grad retained)."""
    torch.manual_seed(5)
    widths = [3, *sizes, 3 if classes else 1]
    linears, norms = [], []
    for k, (a, b) in enumerate(zip(widths, widths[1:]), start=1):
        last = k == len(widths) - 1
        linears.append(nn.Linear(a, b, bias=last or norm != "batch").double())
        if not last and norm != "none":
            norms.append((nn.BatchNorm1d(b) if norm == "batch" else nn.LayerNorm(b)).double().train())
    h = torch.tensor(x, dtype=torch.float32).double()  # the data is float32, as read
    zs = []
    for k, layer in enumerate(linears[:-1], start=1):
        z = layer(h)
        z.retain_grad()
        zs.append(z)
        a = ACT[activation](norms[k - 1](z) if norms else z)
        if p:
            a = a * masks[k] / (1 - p)
        h = h + a if residual and widths[k - 1] == widths[k] else a
    out = linears[-1](h)
    out.retain_grad()
    zs.append(out)
    if classes:
        value = F.cross_entropy(out, torch.tensor(y))
    else:
        value = F.mse_loss(out, torch.tensor(y, dtype=torch.float32).double().reshape(-1, 1))
    value.backward()
    return float(value.detach()), linears, norms, zs


def close(got, want):
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want.detach(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_every_gradient_through_norm_dropout_and_skip_equals_autograd(case, tmp_path, cli, monkeypatch):
    sizes, norm, p, residual, activation, classes = CASES[case]
    held_out_csv(tmp_path, classes=classes)
    cfg = config(tmp_path, sizes, norm, p, residual, activation, classes)
    monkeypatch.chdir(tmp_path)
    r = cli("explain", "--config", cfg, "--batch", 1, "--sample", 3, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    text = (tmp_path / "held_out.csv").read_text().splitlines()[1:]
    rows = slice(8, 16)  # batch 1, shuffle: false
    x = np.array([[float(v) for v in line.split(",")[:3]] for line in text])[rows]
    if classes:
        names = sorted({line.split(",")[-1] for line in text})
        y = [names.index(line.split(",")[-1]) for line in text][rows]
    else:
        y = [float(line.split(",")[-1]) for line in text][rows]
    hidden = {int(e["name"][5:]): e for e in doc["layers"] if e["kind"] == "hidden"}
    masks = {}
    if p:
        from backprop_cli.core.model import dropout_masks, net_of
        from backprop_cli.config import load_config

        # the mask explain shows is check-grads' and inspect-grads' mask for (seed, batch 1)
        want = dropout_masks(net_of(load_config(cfg).model), 8, 5, 1)
        for k, e in hidden.items():
            keep = torch.tensor(e["dropout"]["keep"], dtype=torch.float64)
            assert e["dropout"]["p"] == p and e["dropout"]["mode"] == "fixed_mask"
            assert torch.equal(keep.bool(), want[k]) and 0 < keep.mean() < 1
            masks[k] = keep
    loss, linears, norms, zs = oracle(x, y, sizes, norm, p, residual, activation, classes, masks)
    assert doc["loss"] == pytest.approx(loss, rel=1e-12) and doc["mode"] == "train" and doc["norm"] == norm
    depth = len(sizes) + 1
    assert [e["name"] for e in doc["layers"]] == [f"layer{k}" for k in range(depth, 0, -1)]
    for e in doc["layers"]:
        k = int(e["name"][5:])
        layer = linears[k - 1]
        for key in ("grad_weight", "autograd_weight"):
            close(e[key], layer.weight.grad)
        for key in ("delta", "autograd_delta"):  # dL/dz_k
            close(e[key], zs[k - 1].grad)
        if layer.bias is not None:
            close(e["grad_bias"], layer.bias.grad)
        else:
            assert e["grad_bias"] is None and norm == "batch" and e["kind"] == "hidden"
        assert 0 <= e["max_abs_diff"] < 1e-12
        if e["kind"] == "output":
            continue
        widths_match = ([3, *sizes])[k - 1] == sizes[k - 1]
        assert e["residual"] is (residual and widths_match)
        if norm == "none":
            assert e["norm"] is None
            continue
        n = e["norm"]
        assert n["name"] == f"norm{k}" and n["kind"] == norm and n["over"] == ("rows" if norm == "batch" else "units")
        for key in ("grad_weight", "autograd_weight"):
            close(n[key], norms[k - 1].weight.grad)
        for key in ("grad_bias", "autograd_bias"):
            close(n[key], norms[k - 1].bias.grad)
        z = zs[k - 1].detach()
        dim = 0 if norm == "batch" else 1
        close(n["mean"], z.mean(dim=dim))
        close(n["var"], z.var(dim=dim, unbiased=False))


def test_the_table_walks_through_the_norm_dropout_and_skip(tmp_path, cli, monkeypatch):
    held_out_csv(tmp_path)
    cfg = config(tmp_path, [6, 6], "batch", 0.25, True, "sigmoid", False)
    monkeypatch.chdir(tmp_path)
    r = cli("explain", "--config", cfg, "--sample", 2)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for needed in ("μ2", "σ²2", "γ2·(z2 − μ2)/√(σ²2 + ε) + β2", "Sigmoid(u2)", "m2", "a2 ⊙ m2/(1 − p)",
                   "h1 + d2 (skip)", "δh2", "δa2", "δu2", "dγ2", "norm2.weight.grad", "dβ2", "norm2.bias.grad",
                   "z2.grad", "δ2·W2 + δh2 (the skip)", "training mode", "norm1"):
        assert needed in out, needed
    assert out.index("layer3 (output layer)") < out.index("layer2\n") < out.index("layer1\n")


def test_the_block_table_fits_60_columns(tmp_path, cli, monkeypatch):
    from rich.cells import cell_len

    held_out_csv(tmp_path)
    cfg = config(tmp_path, [6, 6], "layer", 0.25, True, "tanh", False)
    monkeypatch.chdir(tmp_path)
    r = cli("explain", "--config", cfg, env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.output
    assert max(cell_len(line) for line in r.stdout.splitlines()) <= 60
    assert "over the units, per row" in r.stdout and "normalizes" not in r.stdout  # layer norm: no batch statistics


def test_graph_of_a_net_with_norm_dropout_and_skip_has_every_parameter_and_explains_loss(tmp_path, cli, monkeypatch):
    """graph walks the net's own blocks (before: only its linear layers, so the norm layers were missing):
    every parameter is a leaf, one batch-norm node per hidden block, the loss is explain's (same mode,
    same mask), and each leaf's gradient summary is that of explain's autograd gradient."""
    from backprop_cli.core.graph import summary

    held_out_csv(tmp_path)
    cfg = config(tmp_path, [6, 6], "batch", 0.25, True, "tanh", False)
    monkeypatch.chdir(tmp_path)
    g = json.loads(cli("graph", "--config", cfg, "--batch", 1, "--format", "json").stdout)
    e = json.loads(cli("explain", "--config", cfg, "--batch", 1, "--format", "json").stdout)
    leaves = {n["name"]: n for n in g["nodes"] if n["kind"] == "leaf"}
    assert sorted(leaves) == sorted(["layer1.weight", "norm1.weight", "norm1.bias", "layer2.weight", "norm2.weight",
                                     "norm2.bias", "layer3.weight", "layer3.bias"])
    assert sum(n["op"] == "NativeBatchNormBackward0" for n in g["nodes"]) == 2
    labels = {n["label"] for n in g["nodes"]}
    assert {"z1", "u1", "a1", "h1", "z2", "u2", "a2", "d2", "h2", "ŷ = z3", "L"} <= labels
    def same(text, values):  # graph's float32 summary (4 digits) against explain's float64 numbers
        got = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text.replace("mean", ""))]
        want = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?",
                                             summary(torch.tensor(values)).replace("mean", ""))]
        assert got == pytest.approx(want, rel=2e-3, abs=1e-6), (text, want)

    loss = next(n for n in g["nodes"] if n["kind"] == "loss")
    same(loss["value"], e["loss"])
    for layer in e["layers"]:
        same(leaves[f"{layer['name']}.weight"]["grad"], layer["autograd_weight"])
        if layer.get("norm"):
            same(leaves[f"{layer['norm']['name']}.weight"]["grad"], layer["norm"]["autograd_weight"])
            same(leaves[f"{layer['norm']['name']}.bias"]["grad"], layer["norm"]["autograd_bias"])

"""backprop graph: the autograd graph walked from loss.grad_fn, its nodes' data and grads against autograd
computed here, and its three renderings (DOT text; SVG/PNG through dot or matplotlib)."""

import json
import os
import re

import pytest
import torch

from conftest import CONFIGS, write


def nodes_of(cli, *args):
    r = cli("graph", *args, "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_the_example_shows_the_two_weights_with_their_data_and_grads(cli):
    # autograd, here: z1 = w1·x, ŷ = w2·z1, L = ½(y − ŷ)² with explain's defaults
    w1 = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    w2 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (1.0 - w2 * (w1 * 2.0)) ** 2
    loss.backward()
    doc = nodes_of(cli, "--example")
    leaves = {n["name"]: n for n in doc["nodes"] if n["kind"] == "leaf"}
    assert set(leaves) == {"w1", "w2"}
    assert float(leaves["w1"]["value"]) == 0.5 and float(leaves["w2"]["value"]) == 0.3
    assert float(leaves["w1"]["grad"]) == pytest.approx(w1.grad.item(), rel=1e-3)  # shown with 4 digits
    assert float(leaves["w2"]["grad"]) == pytest.approx(w2.grad.item(), rel=1e-3)
    root = doc["nodes"][0]
    assert root["kind"] == "loss" and root["op"] == "MulBackward0" and float(root["value"]) == pytest.approx(loss.item(), rel=1e-3)
    assert float(root["grad"]) == 1.0
    assert sorted(n["op"] for n in doc["nodes"] if n["kind"] != "leaf") == [
        "MulBackward0", "MulBackward0", "MulBackward0", "PowBackward0", "RsubBackward1"]
    # DOT text on stdout by default, with the same data and grads
    dot = cli("graph", "--example").stdout
    assert dot.startswith("digraph backprop {") and dot.rstrip().endswith("}")
    assert re.search(r'label="w1 \(scalar\)\\ndata 0\.5\\ngrad -0\.42"', dot)
    assert re.search(r'label="w2 \(scalar\)\\ndata 0\.3\\ngrad -0\.7"', dot)
    assert dot.count(" -> ") == len(doc["edges"]) == 6


def test_the_seed_net_graph_against_autograd(cli):
    """Every parameter is a leaf with its shape and its grad's mean and range as autograd has them; every
    operation is named by its grad_fn; the edges lead from the loss to every leaf."""
    from backprop_cli.config import load_config
    from backprop_cli.core.build import build_run

    doc = nodes_of(cli, "--config", CONFIGS / "seed.yaml", "--saved")
    run = build_run(load_config(CONFIGS / "seed.yaml", ["device=cpu"]))
    x, y = run.batches(0)
    loss = torch.nn.functional.mse_loss(run.model(x), y)
    loss.backward()
    leaves = {n["name"]: n for n in doc["nodes"] if n["kind"] == "leaf"}
    assert set(leaves) == {"layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}
    for name, p in run.model.named_parameters():
        node = leaves[name]
        assert node["shape"] == list(p.shape)
        g = p.grad.double()
        if g.numel() <= 4:
            assert [float(v) for v in node["grad"].strip("[]").split(",")] == pytest.approx(g.reshape(-1).tolist(), rel=1e-3)
        else:
            mean, lo, hi = map(float, re.match(r"mean (\S+), \[(\S+), (\S+)\]", node["grad"]).groups())
            assert (mean, lo, hi) == pytest.approx((g.mean().item(), g.min().item(), g.max().item()), rel=1e-3, abs=1e-9)
    ops = [n["op"] for n in doc["nodes"] if n["kind"] != "leaf"]
    assert sorted(ops) == ["AddmmBackward0", "AddmmBackward0", "MseLossBackward0", "ReluBackward0", "TBackward0",
                           "TBackward0"]
    assert doc["nodes"][0]["op"] == "MseLossBackward0" and float(doc["nodes"][0]["value"]) == pytest.approx(loss.item(), rel=1e-3)
    named = {n["label"]: n for n in doc["nodes"] if n["label"]}
    assert named["z1"]["shape"] == [5, 20] and named["h1"]["op"] == "ReluBackward0" and named["ŷ = z2"]["shape"] == [5, 1]
    # every node is reached from the loss; leaves pass nothing on
    reach, todo = {0}, [0]
    while todo:
        a = todo.pop()
        for s, t in doc["edges"]:
            if s == a and t not in reach:
                reach.add(t)
                todo.append(t)
    assert reach == {n["id"] for n in doc["nodes"]}
    assert not any(s in {n["id"] for n in leaves.values()} for s, _ in doc["edges"])
    # --saved: what addmm keeps for its backward (the input of the layer, mat1)
    addmm = [n for n in doc["nodes"] if n["op"] == "AddmmBackward0"]
    assert all(any(s["name"] == "mat1" for s in n["saved"]) for n in addmm)


def test_pictures_without_dot_are_drawn_by_matplotlib(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    png, svg, dot = tmp_path / "g.png", tmp_path / "g.svg", tmp_path / "g.dot"
    r = cli("graph", "--config", CONFIGS / "deep_relu.yaml", "--out", png)
    assert r.exit_code == 0, r.output
    assert "drawn by matplotlib" in r.stderr and png.read_bytes().startswith(b"\x89PNG")
    # depth 6: 7 layers of 4 nodes (Mm, T, weight, and a ReLU between layers) and the loss, 16 rows
    assert "28 nodes, 16 levels" in r.stderr
    from PIL import Image

    w, h = Image.open(png).size
    assert 500 <= w <= 1500 and h <= 2500  # every label at 7.5 pt, nothing scaled down to fit
    assert cli("graph", "--example", "--out", svg).exit_code == 0 and svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert cli("graph", "--example", "--out", dot).exit_code == 0
    assert dot.read_text() == cli("graph", "--example").stdout


def test_pictures_go_through_dot_when_it_is_installed(cli, tmp_path, monkeypatch):
    fake = write(tmp_path / "dot", "#!/bin/sh\necho \"$1\" > \"$(dirname \"$0\")/dot-args\"\ncat > \"$(dirname \"$0\")/dot-input\"\n"
                                   "printf '<svg>drawn</svg>'\n")
    os.chmod(fake, 0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    r = cli("graph", "--example", "--out", tmp_path / "g.svg")
    assert r.exit_code == 0, r.output
    assert "drawn by dot" in r.stderr and (tmp_path / "g.svg").read_text() == "<svg>drawn</svg>"
    assert (tmp_path / "dot-args").read_text().strip() == "-Tsvg"
    assert (tmp_path / "dot-input").read_text() == cli("graph", "--example").stdout


def test_a_net_too_large_to_draw_and_bad_options_are_one_line(cli, tmp_path):
    big = write(tmp_path / "big.yaml", (CONFIGS / "deep_relu.yaml").read_text().replace(
        "hidden_sizes: [32, 32, 32, 32, 32, 32]", "hidden_sizes: [" + ", ".join(["4"] * 60) + "]"))
    r = cli("graph", "--config", big)
    assert r.exit_code == 2 and r.stderr.count("error: ") == 1
    assert "more than 200 nodes" in r.stderr and "model.hidden_sizes" in r.stderr
    for args, words in ((["--example", "--config", CONFIGS / "seed.yaml"], "one of them"), ([], "one of them"),
                        (["--example", "--out", tmp_path / "g.jpg"], "must end in .svg or .png or .dot")):
        r = cli("graph", *args)
        assert r.exit_code == 2 and r.stderr.count("error: ") == 1 and words in r.stderr, r.stderr

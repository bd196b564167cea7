"""loss.class_weights / loss.pos_weight: the weights auto computes from the training rows, the hand-written
dL/dŷ against autograd (so check-grads holds), the checkpoint, the start panel and init's hint."""

import json

import pytest
import torch

from backprop_cli.config import load_config
from backprop_cli.core import components
from backprop_cli.core.build import auto_weights, build_run, make_loss
from backprop_cli.config.components import BCEWithLogitsLoss, CrossEntropyLoss
from backprop_cli.runs.inspection import check_gradients, prepare
from conftest import CONFIGS, write


@pytest.mark.parametrize("smoothing,reduction", [(0.0, "mean"), (0.2, "mean"), (0.1, "sum")])
def test_weighted_cross_entropy_gradient_matches_autograd(smoothing, reduction):
    spec = CrossEntropyLoss(name="cross_entropy", label_smoothing=smoothing, reduction=reduction,
                            class_weights=[0.5, 3.0, 1.25])
    g = torch.Generator().manual_seed(4)
    y_hat = torch.randn(9, 3, generator=g, dtype=torch.float64).requires_grad_()
    y = torch.randint(0, 3, (9,), generator=g)
    loss = make_loss(spec).double()(y_hat, y)
    # torch's definition, written out: Σ_i w_{y_i}·ℓ_i / Σ_i w_{y_i} (without smoothing)
    if smoothing == 0 and reduction == "mean":
        w = torch.tensor([0.5, 3.0, 1.25], dtype=torch.float64)[y]
        nll = -torch.log_softmax(y_hat.detach(), 1)[torch.arange(9), y]
        assert float(loss.detach()) == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, y_hat)
    assert torch.allclose(components.LOSSES["cross_entropy"].gradient(y_hat.detach(), y, spec), grad, atol=1e-12)


@pytest.mark.parametrize("pos_weight", [2.5, [0.5, 4.0, 1.0]])
def test_pos_weight_gradient_matches_autograd(pos_weight):
    spec = BCEWithLogitsLoss(name="bce_with_logits", pos_weight=pos_weight)
    g = torch.Generator().manual_seed(5)
    y_hat = torch.randn(6, 3, generator=g, dtype=torch.float64).requires_grad_()
    y = torch.randint(0, 2, (6, 3), generator=g).double()
    loss = make_loss(spec).double()(y_hat, y)
    pw = torch.as_tensor(pos_weight, dtype=torch.float64)
    p = torch.sigmoid(y_hat.detach())
    assert float(loss.detach()) == pytest.approx(float(-(pw * y * p.log() + (1 - y) * (1 - p).log()).mean()), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, y_hat)
    assert torch.allclose(components.LOSSES["bce_with_logits"].gradient(y_hat.detach(), y, spec), grad, atol=1e-12)


def test_auto_weights_are_n_over_k_count_and_neg_over_pos():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    assert auto_weights("classes", y, 3) == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    assert auto_weights("classes", torch.tensor([0, 0, 1]), 3)[2] == 1.0  # a class without training rows
    yb = torch.tensor([[1.0, 0], [0, 0], [0, 1], [0, 1]])
    assert auto_weights("binary", yb, 2) == pytest.approx([3 / 1, 2 / 2])


def seed_cfg(tmp_path, loss, extra=()):
    sets = ["device=cpu", "model.output_size=3", "data.samples=40", "data.batch_size=8", "data.targets=classes",
            f"loss={loss}", *extra]
    return load_config(CONFIGS / "seed.yaml", sets)


@pytest.mark.parametrize("loss,key", [("cross_entropy", "class_weights"), ("bce_with_logits", "pos_weight")])
def test_auto_comes_from_the_training_rows_and_check_grads_holds(tmp_path, loss, key):
    cfg = seed_cfg(tmp_path, loss, [f"loss.{key}=auto", "data.validation=0.25"])
    run = build_run(cfg)
    x, y = run.dataset.on(run.device)
    assert len(y) == 30  # training rows only
    task = "classes" if loss == "cross_entropy" else "binary"
    assert getattr(run.cfg.loss, key) == pytest.approx(auto_weights(task, y, 3))
    assert getattr(cfg.loss, key) == "auto" and run.auto_weights == key
    probe_run, _ = prepare(seed_cfg(tmp_path, loss, [f"loss.{key}=auto"]))
    result = check_gradients(probe_run, 0)
    assert result["pass"], result["params"]


def test_weights_travel_in_the_checkpoint_and_the_start_panel_shows_them(cli, tmp_path):
    cfg = write(tmp_path / "c.yaml", f"""
seed: 0
device: cpu
model: {{input_size: 4, hidden_size: 6, output_size: 3}}
loss: {{name: cross_entropy, class_weights: auto}}
optimizer: {{name: adam, lr: 0.01}}
data: {{kind: csv, path: {CONFIGS / 'data' / 'penguins.csv'}, target: species, missing: drop_rows, validation: 0.2,
        features: [bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g], standardize: true}}
train: {{epochs: 2}}
""")
    r = cli("train", "-c", cfg, "--save", tmp_path / "m.pt", "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "class_weights: auto, from the training rows" in r.stdout
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    weights = state["config"]["loss"]["class_weights"]
    run = build_run(load_config(cfg))
    _, y = run.dataset.on(run.device)
    counts = torch.bincount(y, minlength=3).tolist()
    assert weights == pytest.approx([len(y) / (3 * c) for c in counts])
    assert f"class_weights=({', '.join(f'{w:.5g}' for w in weights)})" in r.stdout
    ev = cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--format", "json")
    tr = cli("train", "-c", cfg, "--format", "json", "--threads", "1")
    assert json.loads(ev.stdout)["loss"] == pytest.approx(json.loads(tr.stdout)["summary"]["validation"]["loss"])


def test_a_weight_list_must_match_the_outputs(cli, tmp_path):
    r = cli("config", "validate", "-c", CONFIGS / "classification.yaml", "--set", "loss.class_weights=[1, 2]")
    assert r.exit_code == 2 and "class_weights" in r.output and "one weight per class" in r.output


def test_init_suggests_auto_for_a_rare_class(cli, tmp_path):
    rows = ["a,b,label"] + [f"{i},{i % 7},common" for i in range(95)] + [f"{i},{i % 3},rare" for i in range(5)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    r = cli("init", tmp_path / "c.yaml", "--csv", tmp_path / "t.csv", "--target", "label")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c.yaml").read_text()
    assert "class_weights: auto}" in text and "5.0%" in text  # the suggestion, beside the key's own comment
    balanced = ["a,b,label"] + [f"{i},{i % 7},{'xy'[i % 2]}" for i in range(100)]
    (tmp_path / "u.csv").write_text("\n".join(balanced) + "\n")
    r = cli("init", tmp_path / "d.yaml", "--csv", tmp_path / "u.csv", "--target", "label")
    assert "class_weights: auto}" not in (tmp_path / "d.yaml").read_text()  # no suggestion when balanced

"""Batch and layer normalization, dropout and residual connections (model.norm, model.dropout,
model.residual): their config, their backward by hand held to autograd and finite differences, train and
eval modes, checkpoints, and what the diagnostics make of them."""

import itertools
import json
from dataclasses import replace

import pytest
import torch

from backprop_cli.config import ACTIVATION_NAMES, LOSS_NAMES, load_config
from backprop_cli.core import components
from backprop_cli.runs.inspection import check_gradients, prepare
from conftest import CONFIGS

# widths where a skip fits: depth 1 is 3 → 3 → out, depth 4 has one block (3 → 4) without a skip
DEPTHS = {1: "[3]", 2: "[3, 3]", 4: "[3, 3, 4, 4]"}


def cfg_for(activation="tanh", loss="mse", depth=2, extra=()):
    sets = ["device=cpu", f"model.activation={activation}", f"loss={loss}", "model.input_size=3",
            "model.output_size=2", "model.hidden_size=null", f"model.hidden_sizes={DEPTHS[depth]}",
            "data.samples=16", "data.batch_size=8", *extra]
    if loss in ("cross_entropy", "bce_with_logits"):
        sets.append("data.targets=classes")
    return load_config(CONFIGS / "seed.yaml", sets)


@pytest.fixture(autouse=True)
def one_thread():
    """As `check-grads` and `train` run a step this small (runs/distributed.py, set_threads): on a busy
    machine two threads make float64 batch norm some 20× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ALL_ON = ["model.dropout=0.3", "model.residual=true"]


def _design():
    """Every activation × loss at every depth (108 checks, about 0.15 s each), each model with every new
    layer; batch and layer norm alternate so that each activation × loss pair meets both, and each
    activation and each loss meets both at every depth."""
    for (i, act), (j, loss), (d, depth) in itertools.product(enumerate(ACTIVATION_NAMES), enumerate(LOSS_NAMES),
                                                             enumerate(DEPTHS)):
        yield act, loss, depth, ("batch", "layer")[(i + j + d) % 2]


@pytest.mark.parametrize("activation,loss,depth,norm", list(_design()))
def test_every_new_layer_passes_check_grads_at_every_depth(activation, loss, depth, norm):
    """Each model holds every new layer at once: its norm after each hidden linear layer, dropout (a fixed
    mask) after each activation, skips where the widths match; one wrong derivative anywhere fails it."""
    run, _ = prepare(cfg_for(activation, loss, depth, [f"model.norm={norm}", *ALL_ON]))
    result = check_gradients(run, 0)
    assert result["pass"], (result["params"], result["problems"])
    hidden = depth
    expected = ({f"layer{k}.weight" for k in range(1, hidden + 2)} | {f"norm{k}.weight" for k in range(1, hidden + 1)}
                | {f"norm{k}.bias" for k in range(1, hidden + 1)} | {f"layer{hidden + 1}.bias"}
                | ({f"layer{k}.bias" for k in range(1, hidden + 1)} if norm == "layer" else set()))
    assert set(result["params"]) == expected
    for p in result["params"].values():
        assert p["finite_diff"]["checked"] == p["elements"]


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("extra", [["model.dropout=[0.5, 0.2, 0.7, 0.1]"], ["model.residual=true"],
                                   ["model.norm=batch"], ["model.norm=layer", "model.bias=false"]])
def test_each_new_layer_alone_passes(activation, extra):
    run, _ = prepare(cfg_for(activation, "mse", 4, extra))
    result = check_gradients(run, 0)
    assert result["pass"], result["params"]


def _wrong_batch_norm(dy, cache):  # forgets the mean's share: dz = inv·(dx̂ − x̂·mean(dx̂·x̂))
    xhat, inv, gamma = cache
    dxhat = dy * gamma
    return inv * (dxhat - xhat * (dxhat * xhat).mean(dim=0, keepdim=True)), (dy * xhat).sum(0), dy.sum(0)


def _wrong_layer_norm(dy, cache):  # forgets the variance's share: dz = inv·(dx̂ − mean(dx̂))
    xhat, inv, gamma = cache
    dxhat = dy * gamma
    return inv * (dxhat - dxhat.mean(dim=1, keepdim=True)), (dy * xhat).sum(0), dy.sum(0)


PLANTED = {
    "batch norm": (["model.norm=batch"], lambda: ("NORMS", "batch", replace(components.NORMS["batch"],
                                                                              backward=_wrong_batch_norm))),
    "layer norm": (["model.norm=layer"], lambda: ("NORMS", "layer", replace(components.NORMS["layer"],
                                                                              backward=_wrong_layer_norm))),
    # forgets the 1/(1 − p) of inverted dropout
    "dropout": (["model.dropout=0.4"], lambda: ("DROPOUT", None, replace(components.DROPOUT,
                                                                         backward=lambda d, keep, p: d * keep))),
    # drops the skip's path: the gradient reaches h_{k-1} only through the block
    "residual": (["model.residual=true"], lambda: ("RESIDUAL", None, replace(components.RESIDUAL,
                                                                             backward=lambda dh: (0 * dh, dh)))),
}


@pytest.mark.parametrize("what,depth", [(w, d) for w in PLANTED for d in DEPTHS if (w, d) != ("residual", 1)])
def test_a_planted_wrong_derivative_fails_check_grads(monkeypatch, what, depth):
    """(At depth 1 the only skip is around layer1: its path leads to the input, no parameter, so dropping it
    changes no gradient; depth 2 and 4 have a skip below another block.)"""
    extra, plant = PLANTED[what]
    table, key, wrong = plant()
    run, _ = prepare(cfg_for("tanh", "mse", depth, extra))
    assert check_gradients(run, 0)["pass"]
    from backprop_cli.core import grads
    if key is None:
        monkeypatch.setattr(grads, table, wrong)
    else:
        monkeypatch.setitem(getattr(components, table), key, wrong)
    result = check_gradients(run, 0)
    assert not result["pass"]
    failed = [n for n, p in result["params"].items() if not p["pass"]]
    assert failed and all(result["params"][n]["finite_diff"]["max_rel"] < 1e-3 for n in result["params"])  # autograd is right
    # the last layer's gradient comes before any hidden block: it stays right
    assert result["params"][f"layer{depth + 1}.weight"]["pass"]


def test_check_grads_on_the_command_line(cli, monkeypatch):
    args = ("check-grads", "-c", CONFIGS / "deep_sigmoid.yaml", "--set", "model.norm=batch", "--set",
            "model.dropout=0.2", "--set", "model.residual=true", "--set", "model.hidden_sizes=[8, 8, 8]",
            "--set", "data.samples=32", "--set", "data.batch_size=16", "--format", "json")
    r = cli(*args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["pass"] and {"norm1.weight", "norm3.bias"} <= set(doc["params"])
    monkeypatch.setitem(components.NORMS, "batch", replace(components.NORMS["batch"], backward=_wrong_batch_norm))
    r = cli(*args)
    assert r.exit_code == 1 and json.loads(r.stdout)["pass"] is False


# --------------------------------------------------------------------------- config, names, modes, checkpoints

DEEP = """\
seed: 3
model: {{input_size: 4, hidden_sizes: [8, 8, 6], output_size: 1, activation: tanh{model}}}
optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}
data: {{kind: synthetic, samples: {samples}, batch_size: 16, shuffle: true, validation: 0.25}}
train: {{steps: 40, log_every: 10}}
"""


def deep(tmp_path, model=", norm: batch, dropout: 0.3, residual: true", samples=96):
    from conftest import write
    return write(tmp_path / "d.yaml", DEEP.format(model=model, samples=samples))


@pytest.mark.parametrize("value,message", [
    ("model.dropout=1", "model.dropout: dropout must be at least 0 and below 1"),
    ("model.dropout=-0.1", "model.dropout: dropout must be at least 0 and below 1"),
    ("model.dropout=[0.1, 0.2]", "model.dropout: a dropout list gives one value per hidden layer: 3 here (4 → 8 → 8 → 6 → 1)"),
    ("model.norm=group", "model.norm: expected one of: 'none', 'batch' or 'layer' (got group)"),
    ("model.hidden_sizes=[5, 6, 7]", "model.residual: residual: true adds a skip around each hidden layer whose input "
                                     "and output widths match, and none does here (layer1 4→5, layer2 5→6, layer3 6→7)"),
    ("data.batch_size=1", "data.batch_size: model.norm: batch normalizes each unit over the rows of a batch"),
])
def test_bad_values_are_one_line_and_exit_2(cli, tmp_path, value, message):
    r = cli("train", "-c", deep(tmp_path), "--set", value)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not list(tmp_path.glob("*.pt"))


def test_parameter_names_and_the_plain_config():
    cfg = cfg_for("tanh", "mse", 4, ["model.norm=batch", "model.dropout=0.1", "model.residual=true"])
    run, _ = prepare(cfg)
    names = [n for n, _ in run.model.named_parameters()]
    assert names == ["layer1.weight", "norm1.weight", "norm1.bias", "layer2.weight", "norm2.weight", "norm2.bias",
                     "layer3.weight", "norm3.weight", "norm3.bias", "layer4.weight", "norm4.weight", "norm4.bias",
                     "layer5.weight", "layer5.bias"]  # batch norm's β is the hidden layers' bias
    assert [b.k for b in run.model.blocks if b.residual] == [1, 2, 4]  # layer3 is 3 → 4: no skip
    buffers = {n for n, _ in run.model.named_buffers()}
    assert {"norm1.running_mean", "norm1.running_var", "norm4.num_batches_tracked"} <= buffers
    plain = cfg_for("tanh", "mse", 2).plain()["model"]
    assert not {"norm", "dropout", "residual"} & set(plain)  # the defaults leave old configs as they were
    assert cfg.plain()["model"]["norm"] == "batch" and cfg.plain()["model"]["dropout"] == 0.1


def test_the_forward_by_hand_in_train_and_eval_mode():
    """Batch norm: batch statistics in training, the running ones (momentum 0.1, unbiased variance) in eval;
    dropout: random in training, the identity in eval."""
    cfg = cfg_for("tanh", "mse", 1, ["model.norm=batch", "model.dropout=0.5"])
    run, _ = prepare(cfg)
    net = run.model
    x = torch.randn(8, 3)
    net.train()
    net.norm1.reset_running_stats()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(0)
    assert torch.equal(a, net(x))  # dropout: torch's RNG
    torch.manual_seed(1)
    assert not torch.equal(a, net(x))
    z = x @ net.layer1.weight.T
    kept = 0.9 ** 3  # three training passes from (0, 1) with momentum 0.1; the variance unbiased
    torch.testing.assert_close(net.norm1.running_mean, (1 - kept) * z.mean(0))
    torch.testing.assert_close(net.norm1.running_var, kept + (1 - kept) * z.var(0))
    net.eval()
    u = (z - net.norm1.running_mean) / torch.sqrt(net.norm1.running_var + 1e-5) * net.norm1.weight + net.norm1.bias
    expected = torch.tanh(u) @ net.layer2.weight.T + net.layer2.bias
    torch.testing.assert_close(net(x), expected)
    assert torch.equal(net(x), net(x))


def test_evaluate_of_a_dropout_model_gives_the_same_number_twice(cli, tmp_path):
    cfg = deep(tmp_path)
    assert cli("train", "-c", cfg, "--save", tmp_path / "m.pt", "-q").exit_code == 0
    runs = [json.loads(cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--format", "json").stdout) for _ in range(2)]
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["r2"] == runs[1]["r2"]
    # and it is the eval-mode forward: the running statistics, no dropout
    from backprop_cli.io.checkpoint import load_checkpoint
    from backprop_cli.core.build import build_run
    state = load_checkpoint(tmp_path / "m.pt")
    run = build_run(load_config(cfg, ["device=cpu"]))
    run.model.load_state_dict(state["model"])
    run.model.train()
    x, y = run.dataset.val_x, run.dataset.val_y
    run.model.eval()
    with torch.no_grad():
        expected = float(((run.model(x) - y) ** 2).mean())
    assert runs[0]["loss"] == pytest.approx(expected, rel=1e-6)
    assert run.model.norm1.running_var.sub(1).abs().max() > 1e-3  # the statistics travelled in the checkpoint


def test_resume_with_batch_norm_and_dropout_is_bitwise(cli, tmp_path):
    """The running statistics and the dropout RNG travel in the checkpoint: 20 + 20 steps = 40 steps."""
    cfg = deep(tmp_path)
    full, rest = tmp_path / "full.jsonl", tmp_path / "rest.jsonl"
    assert cli("train", "-c", cfg, "--metrics", full, "--save", tmp_path / "full.pt", "-q").exit_code == 0
    assert cli("train", "-c", cfg, "--steps", 20, "--save", tmp_path / "half.pt", "-q").exit_code == 0
    r = cli("train", "-c", cfg, "--resume", tmp_path / "half.pt", "--metrics", rest, "--save", tmp_path / "rest.pt",
            "-q")
    assert r.exit_code == 0, r.output
    a = [json.loads(line) for line in full.read_text().splitlines()]
    b = [json.loads(line) for line in rest.read_text().splitlines()]
    assert [x["loss"] for x in b] == [x["loss"] for x in a if x["step"] > 20]
    one, two = torch.load(tmp_path / "full.pt", weights_only=True), torch.load(tmp_path / "rest.pt", weights_only=True)
    for name in ("norm1.running_mean", "norm2.running_var", "norm3.num_batches_tracked", "layer2.weight"):
        assert torch.equal(one["model"][name], two["model"][name]), name
    assert int(one["model"]["norm1.num_batches_tracked"]) == 40


def test_a_batch_of_one_row_turns_drop_last_on_and_says_so(cli, tmp_path):
    cfg = deep(tmp_path, samples=68)  # 51 training rows: batches of 16, 16, 16 and 3 ... 
    r = cli("train", "-c", cfg, "--set", "data.validation=null", "--set", "data.samples=65")  # 65 = 4·16 + 1
    assert r.exit_code == 0, r.output
    assert "drop_last (on by itself: 65 rows in batches of 16 would leave a last batch of 1 row" in r.stdout
    assert "4 batch(es)/epoch" in r.stdout
    r = cli("train", "-c", cfg, "--set", "data.validation=null", "--set", "data.samples=65", "--set", "model.norm=layer")
    assert r.exit_code == 0 and "drop_last" not in r.stdout  # layer norm normalizes each row: one row is fine


# --------------------------------------------------------------------------- diagnostics and advice


def test_the_component_table_has_every_norm():
    from backprop_cli.config.schema import NORM_NAMES
    assert set(components.NORMS) == set(NORM_NAMES) - {"none"}


def test_activation_statistics_are_measured_after_the_norm_and_the_activation():
    """An oracle by hand: a_k = sigmoid(batchnorm(z_k)) of the batch (before dropout and the skip)."""
    from backprop_cli.core.diagnostics import Diagnostics
    from backprop_cli.core.engine import run_steps
    cfg = cfg_for("sigmoid", "mse", 2, ["model.norm=batch", "model.dropout=0.5", "model.residual=true",
                                         "train.steps=1"])
    run, _ = prepare(cfg)
    net = run.model
    x, _ = run.batches(0)
    with torch.no_grad():  # the first step's forward: batch statistics (γ = 1, β = 0 at the start)
        z = x @ net.layer1.weight.T
        a = torch.sigmoid((z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5))
        mean, std = float(a.mean()), float(a.std(unbiased=False))
    probe = Diagnostics.of(net, "sigmoid", lambda s: True)
    rec = next(iter(run_steps(run.loop(), 1, guard=run.guard, probe=probe)))
    assert rec.activations["layer1"]["mean"] == pytest.approx(mean, rel=1e-5)
    assert rec.activations["layer1"]["std"] == pytest.approx(std, rel=1e-5)
    assert "saturated_fraction" in rec.activations["layer2"]


def test_the_vanishing_advice_names_the_cures_that_apply():
    from backprop_cli.core.health import HealthMonitor
    from backprop_cli.core.records import StepRecord
    norms = {"layer1.weight": 1e-6, "norm1.weight": 1e-9, "layer2.weight": 1.0}

    def advice(*args):
        r = StepRecord(step=1, loss=1.0, grad_norm=1.0, grad_norms=norms, lr=0.1, time=0.0,
                       activations={"layer1": {"mean": 0, "std": 1}}, grad_to_weight={}, update_ratios={})
        (warning,) = HealthMonitor(*args).record(r)
        assert warning.startswith("layer1: gradient norm 1e-06")  # norm1 is not compared
        return warning.split("; try ")[1]

    # a two-layer net: "fewer layers" cannot apply
    assert advice("sigmoid", "default", "none", True) == ("model.activation: relu with model.init: kaiming, "
                                                          "model.norm: batch, or model.residual: true")
    # widths that never match: no skip can apply
    assert advice("sigmoid", "default", "none", None) == ("model.activation: relu with model.init: kaiming, "
                                                          "or model.norm: batch")
    # what the run already has is not advised again
    assert advice("sigmoid", "default", "batch", False) == "model.activation: relu with model.init: kaiming"


def test_train_advises_the_cures_for_the_deep_sigmoid_net(cli):
    r = cli("train", "-c", CONFIGS / "deep_sigmoid.yaml", "--steps", 1, "--format", "json")
    (vanishing,) = [w for w in json.loads(r.stdout)["summary"]["warnings"] if "vanishing" in w]
    assert vanishing.endswith("model.norm: batch, model.residual: true, or fewer layers")
    r = cli("train", "-c", CONFIGS / "deep_sigmoid.yaml", "--steps", 1, "--format", "json",
            "--set", "model.hidden_sizes=[30, 31, 32, 33, 34, 35]")
    (vanishing,) = [w for w in json.loads(r.stdout)["summary"]["warnings"] if "vanishing" in w]
    assert "model.residual" not in vanishing and "model.norm: batch" in vanishing


def test_inspect_grads_shows_the_norm_layers(cli):
    r = cli("inspect-grads", "-c", CONFIGS / "deep_sigmoid.yaml", "--set", "model.norm=layer", "--format", "json")
    assert r.exit_code == 0, r.output
    params = json.loads(r.stdout)["params"]
    assert params["norm3.weight"]["norm"] > 0 and params["norm3.bias"]["shape"] == [32]
    r2 = cli("inspect-grads", "-c", CONFIGS / "deep_sigmoid.yaml", "--set", "model.norm=layer", "--set",
             "model.dropout=0.3", "--format", "json")
    again = cli("inspect-grads", "-c", CONFIGS / "deep_sigmoid.yaml", "--set", "model.norm=layer", "--set",
                "model.dropout=0.3", "--format", "json")
    assert json.loads(r2.stdout)["loss"] == json.loads(again.stdout)["loss"]  # the mask is reproducible

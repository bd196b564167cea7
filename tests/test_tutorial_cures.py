"""The claims of the tutorial's section 6b and chapter 8 (docs/make_tutorial.py: SECTION_6B,
CHAPTER_OVERFITTING), each asserted on a run of the command the tutorial shows, with the tolerance the
prose states (it says "below 0.2", "within 10×", never a digit that rounding could move)."""

import json

import pytest

from backprop_cli.core.health import layer_norms
from conftest import ROOT


@pytest.fixture
def here(tmp_path, monkeypatch):
    import shutil
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train(cli, *args):
    r = cli("train", *args, "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_section_6b_batch_norm_and_skips(cli, here):
    plain = train(cli, "--config", "configs/deep_sigmoid.yaml", "--metrics", "plain.jsonl")
    bn = train(cli, "--config", "configs/deep_sigmoid.yaml", "--set", "model.norm=batch", "--metrics", "bn.jsonl")
    first_plain = layer_norms(records(here / "plain.jsonl")[0]["grad_norms"])
    first_bn = layer_norms(records(here / "bn.jsonl")[0]["grad_norms"])
    # "layer1's is within 10× of the last layer's at step 1, where it was 60,000× smaller"
    assert first_bn["layer7"] / first_bn["layer1"] < 10
    assert 5e4 < first_plain["layer7"] / first_plain["layer1"] < 7e4
    # "no warning is printed, and the epoch loss falls below 0.2 where the plain net stayed above 1"
    assert bn["summary"]["warnings"] == [] and bn["summary"]["epoch_loss"] < 0.2
    assert plain["summary"]["epoch_loss"] > 1
    # the norm layers' gradients are recorded (the dashboard draws them)
    assert {"norm1", "norm6"} <= set(first_bn)
    # check-grads passes for it
    assert cli("check-grads", "--config", "configs/deep_sigmoid.yaml", "--set", "model.norm=batch").exit_code == 0
    # skips: "layer1's gradient norm at step 1 is above 0.01 (it was 1e-5 without skips) ... ends below 0.2"
    res = train(cli, "--config", "configs/deep_sigmoid.yaml", "--set", "model.residual=true", "--set",
                "optimizer.lr=0.01", "--metrics", "res.jsonl")
    assert layer_norms(records(here / "res.jsonl")[0]["grad_norms"])["layer1"] > 0.01
    assert 5e-6 < first_plain["layer1"] < 2e-5
    assert res["summary"]["epoch_loss"] < 0.2


def _evaluations(path):
    return [r for r in records(path) if "val_loss" in r]


def test_chapter_8_over_fitting_and_its_cures(cli, here):
    plain = train(cli, "--config", "configs/overfit.yaml", "--metrics", "plain.jsonl")
    ev = _evaluations(here / "plain.jsonl")
    # "the training loss falls to almost 0 (below 0.01), while the validation loss, below 0.6 at its best
    # (in the first 40 steps), rises above 0.6"
    assert ev[-1]["train_loss"] < 0.01 and ev[-1]["val_loss"] > 0.6
    best = min(ev, key=lambda r: r["val_loss"])
    assert best["val_loss"] < 0.6 and best["step"] <= 40
    assert plain["summary"]["validation"]["loss"] == pytest.approx(ev[-1]["val_loss"])
    final = ev[-1]["val_loss"]
    # dropout: "the training loss no longer reaches 0 and the final validation loss is at least 0.1 lower"
    train(cli, "--config", "configs/overfit.yaml", "--set", "model.dropout=0.5", "--metrics", "drop.jsonl")
    drop = _evaluations(here / "drop.jsonl")
    assert drop[-1]["train_loss"] > 0.01 and drop[-1]["val_loss"] < final - 0.1
    # weight decay: "lower than the plain run's by more than 0.05"
    train(cli, "--config", "configs/overfit.yaml", "--set", "optimizer.weight_decay=0.01", "--metrics", "wd.jsonl")
    assert _evaluations(here / "wd.jsonl")[-1]["val_loss"] < final - 0.05
    # early stopping: "stops long before step 600 (by step 200), ... a validation loss below 0.6"
    es = train(cli, "--config", "configs/overfit.yaml", "--set", "train.early_stopping={patience: 5}",
               "--save-best", "best.pt")
    assert es["summary"]["steps"] <= 200 and es["summary"]["validation"]["best_loss"] < 0.6
    r = cli("evaluate", "--checkpoint", "best.pt", "--format", "json")
    assert json.loads(r.stdout)["loss"] == pytest.approx(es["summary"]["validation"]["best_loss"], rel=1e-6)

"""Held-out data during training: metrics against formulas, evaluation records, epoch_loss, early stopping,
--save-best, --epochs, and the bad inputs around them."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from backprop_cli.config import load_config
from backprop_cli.data.split import split_rows
from backprop_cli.data.tables import Scaling
from backprop_cli.runs.evaluation import measure
from backprop_cli.io.metrics_read import read_metrics
from conftest import CONFIGS, write

PENGUINS = CONFIGS / "data" / "penguins.csv"
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def penguins_yaml(tmp_path, train="epochs: 6", data_extra="", seed=0):
    return write(tmp_path / "p.yaml", f"""\
seed: {seed}
model: {{input_size: 4, hidden_size: 8, output_size: 3}}
loss: cross_entropy
optimizer: {{name: adam, lr: 0.01}}
data: {{kind: csv, path: {PENGUINS}, target: species, features: {FEATURES}, missing: drop_rows,
        validation: 0.2, standardize: true, batch_size: 32{data_extra}}}
train: {{{train}}}
""")


class Fixed(nn.Module):
    """A 'model' whose outputs are given: row i of x holds its own output."""

    def forward(self, x):
        return x


def test_classification_metrics_match_their_formulas():
    logits = torch.tensor([[2.0, 0, 0], [0, 3, 0], [0, 0, 1], [1, 0, 0], [0, 2, 0], [0, 0, 5], [0, 1, 0]])
    y = torch.tensor([0, 1, 2, 1, 1, 0, 2])
    r = measure(Fixed(), nn.CrossEntropyLoss(), "cross_entropy", logits, y, classes=["a", "b", "c"], detail=True,
                batch_rows=3)
    pred = logits.argmax(1)
    expect_loss = float(torch.mean(-torch.log_softmax(logits, 1)[torch.arange(7), y]))
    assert r["loss"] == pytest.approx(expect_loss, rel=1e-6)
    assert r["accuracy"] == pytest.approx(float((pred == y).float().mean()))
    conf = [[int(((y == i) & (pred == j)).sum()) for j in range(3)] for i in range(3)]
    assert r["confusion"].tolist() == conf  # an array (k ≤ limits.MAX_CLASSES), no k×k list
    for i, row in enumerate(r["per_class"]):
        tp = conf[i][i]
        precision = tp / sum(conf[k][i] for k in range(3)) if sum(conf[k][i] for k in range(3)) else 0.0
        recall = tp / sum(conf[i])
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (row["class"], row["support"]) == ("abc"[i], sum(conf[i]))
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)


def test_regression_metrics_in_original_units():
    rng = np.random.default_rng(0)
    y = rng.normal(5, 3, size=(50, 2)).astype(np.float32)
    pred = (y + rng.normal(0, 1, size=y.shape)).astype(np.float32)
    pred[:, 1] = y[:, 1] * 0.5
    sc = Scaling([5.0, 5.0], [3.0, 3.0])
    scaled_y, scaled_pred = (y - 5) / 3, (pred - 5) / 3
    r = measure(Fixed(), nn.MSELoss(), "mse", torch.tensor(scaled_pred), torch.tensor(scaled_y), y_scaling=sc,
                batch_rows=7)
    y64, p64 = y.astype(np.float64), pred.astype(np.float64)
    assert r["loss"] == pytest.approx(np.mean((p64 - y64) ** 2), rel=1e-5)
    assert r["mae"] == pytest.approx(np.mean(np.abs(p64 - y64)), rel=1e-5)
    r2 = [1 - np.sum((p64[:, j] - y64[:, j]) ** 2) / np.sum((y64[:, j] - y64[:, j].mean()) ** 2) for j in range(2)]
    assert r["r2"] == pytest.approx(np.mean(r2), rel=1e-5)


def test_binary_accuracy_counts_every_element():
    logits = torch.tensor([[1.0], [-1], [2], [-3]])
    y = torch.tensor([[1.0], [1], [0], [0]])
    r = measure(Fixed(), nn.BCEWithLogitsLoss(), "bce_with_logits", logits, y, detail=True)
    assert r["accuracy"] == 0.5 and r["confusion"].tolist() == [[1, 1], [1, 1]]
    assert r["loss"] == pytest.approx(float(nn.functional.binary_cross_entropy_with_logits(logits, y)))


def pairwise_auc(score, positive):
    """The ROC AUC by its definition: the share of (positive, negative) pairs ranked right, ties one half."""
    pos = [s for s, p in zip(score, positive) if p]
    neg = [s for s, p in zip(score, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_f1_macro_roc_auc_and_log_loss_match_their_formulas():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(40, 3)), dtype=torch.float32)
    logits[:5] = torch.tensor([1.0, 1.0, 0.0])  # tied scores
    y = torch.tensor(rng.integers(0, 3, size=40))
    r = measure(Fixed(), nn.CrossEntropyLoss(), "cross_entropy", logits, y, classes=["a", "b", "c"], batch_rows=7)
    pred = logits.argmax(1)
    f1s = []
    for c in range(3):
        tp = int(((pred == c) & (y == c)).sum())
        fp, fn = int(((pred == c) & (y != c)).sum()), int(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert r["f1_macro"] == pytest.approx(sum(f1s) / 3)
    p = torch.softmax(logits.double(), 1)
    aucs = [pairwise_auc(p[:, c].float().tolist(), (y == c).tolist()) for c in range(3)]
    assert r["roc_auc"] == pytest.approx(sum(aucs) / 3)
    assert r["log_loss"] == pytest.approx(float(-torch.log(p[torch.arange(40), y]).mean()), rel=1e-9)
    assert r["log_loss"] == pytest.approx(r["loss"], rel=1e-5)  # no smoothing, no weights: the same number
    # label smoothing changes the loss, not the log loss
    s = measure(Fixed(), nn.CrossEntropyLoss(label_smoothing=0.2), "cross_entropy", logits, y, classes=list("abc"))
    assert s["log_loss"] == pytest.approx(r["log_loss"]) and s["loss"] != pytest.approx(r["loss"])


def test_binary_f1_macro_roc_auc_and_log_loss():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(size=(30, 1)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 2, size=(30, 1)), dtype=torch.float32)
    r = measure(Fixed(), nn.BCEWithLogitsLoss(), "bce_with_logits", logits, y, batch_rows=4)
    pred, truth = (logits > 0).flatten(), (y > 0.5).flatten()
    f1 = []
    for positive in (True, False):
        tp = int(((pred == positive) & (truth == positive)).sum())
        fp = int(((pred == positive) & (truth != positive)).sum())
        fn = int(((pred != positive) & (truth == positive)).sum())
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert r["f1_macro"] == pytest.approx(sum(f1) / 2)
    assert r["roc_auc"] == pytest.approx(pairwise_auc(logits.flatten().tolist(), truth.tolist()))
    prob = torch.sigmoid(logits.double()).flatten()
    t = truth.double()
    assert r["log_loss"] == pytest.approx(float(-(t * prob.log() + (1 - t) * (1 - prob).log()).mean()))
    one_class = measure(Fixed(), nn.BCEWithLogitsLoss(), "bce_with_logits", logits, torch.ones_like(y))
    assert math.isnan(one_class["roc_auc"])  # no negatives: no ROC curve


def test_regression_rmse_is_the_root_of_the_mean_squared_error():
    rng = np.random.default_rng(3)
    y = rng.normal(5, 3, size=(20, 2)).astype(np.float32)
    pred = (y + rng.normal(0, 1, size=y.shape)).astype(np.float32)
    sc = Scaling([5.0, 5.0], [3.0, 3.0])
    r = measure(Fixed(), nn.L1Loss(), "l1", torch.tensor((pred - 5) / 3), torch.tensor((y - 5) / 3), y_scaling=sc,
                batch_rows=6)
    assert r["rmse"] == pytest.approx(np.sqrt(np.mean((pred.astype(np.float64) - y) ** 2)), rel=1e-5)


def held_out(cfg):
    """The validation rows and the standardized features, recomputed here from the CSV by hand."""
    import csv

    rows = [r for r in csv.DictReader(open(PENGUINS)) if all(r[f] != "NA" for f in FEATURES)]
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    names = sorted({r["species"] for r in rows})
    y = np.array([names.index(r["species"]) for r in rows])
    val = split_rows(len(rows), 0.2, cfg.seed, y)
    train = np.setdiff1d(np.arange(len(rows)), val)
    mean, std = x[train].mean(0), x[train].std(0)
    return (torch.tensor((x[val] - mean) / std, dtype=torch.float32), torch.tensor(y[val]),
            torch.tensor((x[train] - mean) / std, dtype=torch.float32), torch.tensor(y[train]), names)


def test_train_with_validation_records_evaluations_and_the_truth_about_loss(cli, tmp_path):
    cfg_path = penguins_yaml(tmp_path)
    r = cli("train", "-c", cfg_path, "--metrics", tmp_path / "m.jsonl", "--save", tmp_path / "c.pt",
            "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    recs = read_metrics(tmp_path / "m.jsonl")
    vx, vy, tx, ty, names = held_out(load_config(cfg_path))
    per_epoch = math.ceil(len(ty) / 32)
    assert len(recs) == 6 * per_epoch and doc["summary"]["epochs"] == 6
    evals = [rec for rec in recs if "val_loss" in rec]
    assert [rec["step"] for rec in evals] == [per_epoch * e for e in range(1, 7)]  # every epoch
    assert set(evals[0]) >= {"val_loss", "val_accuracy", "train_loss", "train_accuracy", "epoch", "epoch_loss"}
    # epoch_loss: the batch losses weighted by their rows
    for e in range(6):
        batch = recs[e * per_epoch:(e + 1) * per_epoch]
        rows = [min(32, len(ty) - 32 * k) for k in range(per_epoch)]
        expect = sum(b["loss"] * n for b, n in zip(batch, rows)) / sum(rows)
        assert batch[-1]["epoch_loss"] == pytest.approx(expect, rel=1e-6) and "epoch_loss" not in batch[0]
    # the last evaluation, recomputed from the checkpoint on rows chosen and scaled by hand
    from backprop_cli.io.checkpoint import load_checkpoint
    from backprop_cli.core.model import build_model

    state = load_checkpoint(tmp_path / "c.pt")
    model = build_model(load_config(cfg_path).model, 0)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        v_out, t_out = model(vx), model(tx)
    assert evals[-1]["val_loss"] == pytest.approx(float(nn.functional.cross_entropy(v_out, vy)), rel=1e-5)
    assert evals[-1]["val_accuracy"] == pytest.approx(float((v_out.argmax(1) == vy).float().mean()))
    assert evals[-1]["train_loss"] == pytest.approx(float(nn.functional.cross_entropy(t_out, ty)), rel=1e-5)
    v = doc["summary"]["validation"]
    assert v["loss"] == evals[-1]["val_loss"] and v["accuracy"] == evals[-1]["val_accuracy"]
    best = min(evals, key=lambda rec: rec["val_loss"])
    assert (v["best_step"], v["best_loss"]) == (best["step"], best["val_loss"])
    assert v["classes"] == names and sum(map(sum, v["confusion"])) == len(vy)
    assert doc["summary"]["epoch_loss"] == recs[-1]["epoch_loss"]
    assert state["data"]["classes"] == names and state["data"]["split"]["validation_rows"] == len(vy)


def test_the_table_shows_epochs_evaluations_and_the_class_tables(cli, tmp_path):
    r = cli("train", "-c", penguins_yaml(tmp_path), "--threads", "1")
    assert r.exit_code == 0, r.output
    out = r.stdout
    header = next(line for line in out.splitlines() if line.split()[:1] == ["step"])
    assert header.split()[:3] == ["step", "epoch", "loss"]
    assert header.split()[-7:] == ["epoch_loss", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                                   "val_f1_macro", "val_roc_auc"]
    for fragment in ("validation: 69 of 342 rows of", "stratified by class", "scaling:    features standardized",
                     "epoch loss:", "validation: loss", "confusion matrix", "Adelie", "precision",
                     "each the loss of one batch", "2 row(s) with missing cells left out"):
        assert fragment in out, fragment


def test_early_stopping_stops_with_a_reason_and_exit_0(cli, tmp_path):
    cfg = penguins_yaml(tmp_path, "epochs: 30, early_stopping: {patience: 2, min_delta: 1.0e9}")
    r = cli("train", "-c", cfg, "--format", "json", "--metrics", tmp_path / "m.jsonl", "--threads", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["status"] == "stopped" and doc["reason"] == "early stopping"
    evals = [rec for rec in read_metrics(tmp_path / "m.jsonl") if "val_loss" in rec]
    assert len(evals) == 3 and doc["summary"]["steps"] == evals[-1]["step"]  # the first sets the mark, 2 more
    r = cli("train", "-c", cfg, "--threads", "1")
    assert r.exit_code == 0 and "stopped:" in r.stdout and "(early stopping)" in r.stdout


def test_save_best_writes_the_best_evaluation(cli, tmp_path):
    cfg_path = penguins_yaml(tmp_path, "epochs: 8", ", shuffle: true")
    r = cli("train", "-c", cfg_path, "--save-best", tmp_path / "best.pt", "--format", "json", "--threads", "1",
            "--set", "optimizer.lr=0.2")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    from backprop_cli.io.checkpoint import load_checkpoint
    from backprop_cli.core.model import build_model

    state = load_checkpoint(tmp_path / "best.pt")
    v = doc["summary"]["validation"]
    assert state["step"] == v["best_step"] and f"step {v['best_step']}" in doc["outputs"]["best checkpoint"]
    model = build_model(load_config(cfg_path).model, 0)
    model.load_state_dict(state["model"])
    vx, vy, *_ = held_out(load_config(cfg_path))
    with torch.no_grad():
        assert float(nn.functional.cross_entropy(model(vx), vy)) == pytest.approx(v["best_loss"], rel=1e-5)


def test_epochs_option_is_train_epochs(cli, tmp_path):
    cfg = penguins_yaml(tmp_path)
    a = json.loads(cli("train", "-c", cfg, "--epochs", "2", "--format", "json", "--threads", "1").stdout)
    b = json.loads(cli("train", "-c", cfg, "--set", "train.epochs=2", "--format", "json", "--threads", "1").stdout)
    assert a["summary"]["steps"] == b["summary"]["steps"] == 2 * 9 and a["summary"]["last_loss"] == b["summary"]["last_loss"]
    r = cli("train", "-c", cfg, "--epochs", "2", "--steps", "3")
    assert r.exit_code == 2 and "give --steps or --epochs, not both" in r.stderr


def test_drop_last_makes_every_batch_full(cli, tmp_path):
    cfg = penguins_yaml(tmp_path, "epochs: 2", ", drop_last: true")
    doc = json.loads(cli("train", "-c", cfg, "--format", "json", "--threads", "1").stdout)
    assert doc["summary"]["steps"] == 2 * (273 // 32)


def test_resume_keeps_the_split(cli, tmp_path):
    cfg = penguins_yaml(tmp_path, "steps: 20")
    assert cli("train", "-c", cfg, "--save", tmp_path / "a.pt", "--steps", "10", "--threads", "1").exit_code == 0
    assert cli("train", "-c", cfg, "--resume", tmp_path / "a.pt", "--threads", "1").exit_code == 0
    r = cli("train", "-c", cfg, "--resume", tmp_path / "a.pt", "--set", "seed=5")
    assert r.exit_code == 2 and "--resume would hold out other validation rows" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--set", "train.early_stopping={patience: 2}", "--set", "data.validation=null"],
     "train.early_stopping: early stopping needs validation data"),
    (["--set", "train.eval_every=5", "--set", "data.validation=null"], "train.eval_every: evaluation needs validation"),
    (["--save-best", "b.pt", "--set", "data.validation=null"], "--save-best needs validation data"),
    (["--set", "data.validation=1.5"], "data.validation"),
    (["--set", "data.validation=0.95"], "training rows after holding out 325 validation rows; lower data.batch_size"),
    (["--set", "data.validation=other.csv"], "other.csv: no such file (data.validation)"),
    (["--set", "data.standardize_target=true"], "standardize_target is for regression"),
])
def test_bad_validation_inputs_are_one_line_exit_2_nothing_written(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = cli("train", "-c", penguins_yaml(tmp_path), "--save", "out.pt", *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "b.pt").exists()


def test_inspect_grads_warns_about_raw_columns_of_very_different_scales(cli, tmp_path):
    cfg = penguins_yaml(tmp_path)
    r = cli("inspect-grads", "-c", cfg, "--set", "data.standardize=false", "--format", "json")
    import csv

    rows = [r for r in csv.DictReader(open(PENGUINS)) if r["bill_length_mm"] != "NA"]
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    train = np.setdiff1d(np.arange(len(rows)), split_rows(len(rows), 0.2, 0, np.array(
        [sorted({q["species"] for q in rows}).index(q["species"]) for q in rows])))
    std = x[train].std(0)
    ratio = std.max() / std.min()  # body mass (g) against bill depth (mm)
    warning = next(w for w in json.loads(r.stdout)["warnings"] if "differ in scale" in w)
    assert f"{ratio:.3g}×" in warning and "'body_mass_g'" in warning and "set data.standardize: true" in warning
    r = cli("inspect-grads", "-c", cfg, "--format", "json")
    assert not any("differ in scale" in w for w in json.loads(r.stdout)["warnings"])


def test_restore_best_keeps_and_saves_the_best_evaluation(cli, tmp_path):
    """A run that over-fits (lr 0.3, 8-row batches): the model at the end, --save and the summary are those
    of the lowest val_loss the run printed; evaluate on the checkpoint gives that val_loss back."""
    cfg = penguins_yaml(tmp_path, "epochs: 12, early_stopping: {patience: 100, restore_best: true}")
    r = cli("train", "-c", cfg, "--set", "optimizer.lr=0.3", "--set", "data.batch_size=8", "--set", "model.hidden_size=32", "--save",
            tmp_path / "best.pt", "--metrics", tmp_path / "m.jsonl", "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    evals = [rec for rec in read_metrics(tmp_path / "m.jsonl") if "val_loss" in rec]
    best = min(evals, key=lambda rec: rec["val_loss"])
    assert best["step"] < evals[-1]["step"] and best["val_loss"] < evals[-1]["val_loss"]  # it did over-fit
    v = doc["summary"]["validation"]
    assert v["restored_best"] == best["step"] == v["best_step"] and v["loss"] == best["val_loss"]
    assert v["accuracy"] == best["val_accuracy"]
    assert f"best.pt (step {best['step']})" in doc["outputs"]["checkpoint"]
    ev = json.loads(cli("evaluate", "--checkpoint", tmp_path / "best.pt", "--format", "json").stdout)
    assert ev["step"] == best["step"] and ev["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    table = cli("train", "-c", cfg, "--set", "optimizer.lr=0.3", "--set", "data.batch_size=8", "--set", "model.hidden_size=32", "--threads", "1")
    assert f"restore_best: the model at the end and --save are those of step {best['step']}" in table.stdout

"""compare-optimizers on held-out data: every run evaluated as train evaluates, ranked by val_loss (checked
against val_loss and accuracy computed here, on the held-out rows, from a model trained here by the engine),
early stopping and restore_best honoured, validation curves plotted; without validation data it says that it
ranks by the training loss."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from backprop_cli.config import load_config, parse_optimizer
from backprop_cli.core.build import build_run
from backprop_cli.core.engine import run_steps
from backprop_cli.runs.compare import compare_optimizers, ranking, summarize, variant
from conftest import CONFIGS

CLS = CONFIGS / "classification.yaml"
HELD_OUT = ["device=cpu", "data.validation=0.25", "train.eval_every=10", "train.steps=40", "train.epochs=null"]
SPECS = ["sgd:lr=0.01", "adam:lr=0.001", "adam:lr=0.02"]


def test_runs_are_ranked_by_the_val_loss_of_their_final_models_computed_here():
    cfg = load_config(CLS, HELD_OUT)
    specs = [parse_optimizer(s) for s in SPECS]
    results = compare_optimizers(cfg, specs)
    summary = summarize(results)
    assert ranking(results)["ranked_by"] == "val_loss"
    expected = []
    for spec, result in zip(specs, results):
        run = build_run(variant(cfg, spec, cfg.seed))  # the same run, trained here by the engine alone
        for _ in run_steps(run.loop(), run.steps, guard=run.guard):
            pass
        xv, yv = run.dataset.validation_on(run.device)
        run.model.eval()
        with torch.no_grad():
            logits = run.model(xv)
        val_loss = F.cross_entropy(logits, yv).item()
        accuracy = (logits.argmax(dim=1) == yv).double().mean().item()
        assert result.validation["loss"] == pytest.approx(val_loss, rel=1e-6)
        assert result.validation["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert [e["step"] for e in result.evaluations] == [10, 20, 30, 40]
        assert result.evaluations[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-6)
        expected.append(val_loss)
    assert len(set(round(v, 6) for v in expected)) == 3  # three different losses: the ranking means something
    order = sorted(range(3), key=lambda i: expected[i])
    assert [e["rank"] for e in summary] == [order.index(i) + 1 for i in range(3)]
    for e, v in zip(summary, expected):
        assert e["val_loss"]["mean"] == pytest.approx(v, rel=1e-6)
    best = summary[order[0]]
    assert "val_loss" in best["best_in"]


def test_the_table_and_the_json_say_what_they_rank_by(cli, tmp_path):
    sets = [a for s in HELD_OUT for a in ("--set", s)]
    opts = [a for s in SPECS[:2] for a in ("-o", s)]
    m = tmp_path / "m.csv"
    r = cli("compare-optimizers", "-c", CLS, *sets, *opts, "--metrics", m)
    assert r.exit_code == 0, r.output
    assert "ranked by val_loss on the validation rows." in r.stdout
    header = r.stdout.splitlines()[1].split()
    assert header[:6] == ["label", "rank", "val_loss", "best_val_loss", "val_accuracy", "first_loss"]
    rows = list(csv.DictReader(m.open()))
    evaluated = [row for row in rows if row["val_loss"]]
    assert [int(row["step"]) for row in evaluated] == [10, 20, 30, 40] * 2 and "val_accuracy" in rows[0]
    r = cli("compare-optimizers", "-c", CLS, *sets, *opts, "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["ranked_by"] == "val_loss"
    for run in doc["runs"]:
        assert run["stopped_early"] is None and run["validation"]["loss"] == run["evaluations"][-1]["val_loss"]
        assert {"step", "val_loss", "val_accuracy", "val_f1_macro", "train_loss"} <= set(run["evaluations"][0])
    for e in doc["summary"]:
        assert {"val_loss", "best_val_loss", "val_accuracy", "rank", "stopped_early", "restored_best"} <= set(e)
    r = cli("compare-optimizers", "-c", CLS, "--set", "device=cpu", "--steps", 10, *opts)
    assert r.exit_code == 0 and "val_loss " not in r.stdout.splitlines()[1]
    assert ("ranked by the training loss (final_loss, the last batch's): the config has no validation data; "
            "set data.validation") in r.stdout


def test_early_stopping_stops_each_run_and_restore_best_gives_its_best_evaluation(cli):
    """min_delta 10: no evaluation after the first improves enough, so patience 1 stops every run at its
    second evaluation (step 20 of 40); with restore_best its numbers are those of its best evaluation."""
    sets = [a for s in HELD_OUT + ["train.early_stopping={patience: 1, min_delta: 10, restore_best: true}"]
            for a in ("--set", s)]
    r = cli("compare-optimizers", "-c", CLS, *sets, "-o", "sgd:lr=0.01", "-o", "adam:lr=0.05", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for run in doc["runs"]:
        assert run["stopped_early"] == 20 and len(run["losses"]) == 20
        losses = [e["val_loss"] for e in run["evaluations"]]
        assert [e["step"] for e in run["evaluations"]] == [10, 20]
        assert run["validation"]["loss"] == min(losses)
        assert run["validation"]["restored_best"] == run["evaluations"][losses.index(min(losses))]["step"]
    for e, run in zip(doc["summary"], doc["runs"]):
        assert e["stopped_early"] == [{"seed": 0, "step": 20}]
        assert e["restored_best"] == [{"seed": 0, "step": run["validation"]["restored_best"]}]
    r = cli("compare-optimizers", "-c", CLS, *sets, "-o", "sgd:lr=0.01", "-o", "adam:lr=0.05")
    assert "sgd lr=0.01: stopped early at step 20 (train.early_stopping)." in r.stdout
    assert "its val numbers are its best evaluation's" in r.stdout


def test_the_plot_has_a_validation_panel(cli, tmp_path, monkeypatch):
    from backprop_cli.render import plots

    drawn = []
    real = plots._validation_panel

    def spy(ax, series):
        drawn.append([(s["label"], s["val_steps"], len(s["val_loss_mean"])) for s in series])
        real(ax, series)

    monkeypatch.setattr(plots, "_validation_panel", spy)
    png = tmp_path / "c.png"
    sets = [a for s in HELD_OUT for a in ("--set", s)]
    r = cli("compare-optimizers", "-c", CLS, *sets, "-o", "sgd:lr=0.01", "-o", "adam", "--plot", png, "-q")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert drawn == [[("sgd lr=0.01", [10, 20, 30, 40], 4), ("adam lr=0.001", [10, 20, 30, 40], 4)]]

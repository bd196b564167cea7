"""`backprop evaluate` and `backprop predict`: the checkpoint's own columns, scaling and class names."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from backprop_cli.config import load_config
from backprop_cli.core.model import build_model
from conftest import CONFIGS, write
from test_validation import FEATURES, PENGUINS, held_out, penguins_yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One penguins run with validation: its config, checkpoint and JSON summary."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    tmp = tmp_path_factory.mktemp("trained")
    cfg = penguins_yaml(tmp, "epochs: 5")
    r = CliRunner().invoke(app, ["train", "-c", str(cfg), "--save", str(tmp / "c.pt"), "--format", "json",
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    return cfg, tmp / "c.pt", json.loads(r.stdout)


def by_hand(cfg_path, ckpt, x):
    state = torch.load(ckpt, weights_only=True)
    model = build_model(load_config(cfg_path).model, 0)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return model(x)


def test_evaluate_reproduces_the_last_val_loss_train_printed(cli, trained):
    cfg, ckpt, doc = trained
    r = cli("evaluate", "--checkpoint", ckpt, "--format", "json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    v = doc["summary"]["validation"]
    assert ev["loss"] == v["loss"] and ev["accuracy"] == v["accuracy"] and ev["confusion"] == v["confusion"]
    assert ev["rows"] == 69 and ev["step"] == doc["summary"]["steps"]
    table = cli("evaluate", "--checkpoint", ckpt).stdout
    assert "confusion matrix" in table and f"{v['loss']:.5g}" in table


def test_evaluate_on_a_csv_with_text_labels(cli, trained, tmp_path):
    cfg, ckpt, _ = trained
    rows = list(csv.DictReader(open(PENGUINS)))[150:170]
    rows = [r for r in rows if r["bill_length_mm"] != "NA"]
    with open(tmp_path / "e.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["species", *FEATURES])
        w.writeheader()
        w.writerows({k: r[k] for k in ["species", *FEATURES]} for r in rows)
    ev = json.loads(cli("evaluate", "--checkpoint", ckpt, "--data", tmp_path / "e.csv", "--format", "json").stdout)
    *_, names = held_out(load_config(cfg))
    state = torch.load(ckpt, weights_only=True)
    mean, std = (np.array(state["data"]["x_scaling"][k]) for k in ("mean", "std"))
    x = torch.tensor((np.array([[float(r[f]) for f in FEATURES] for r in rows]) - mean) / std, dtype=torch.float32)
    y = torch.tensor([names.index(r["species"]) for r in rows])
    out = by_hand(cfg, ckpt, x)
    assert ev["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(out, y)), rel=1e-5)
    assert ev["accuracy"] == pytest.approx(float((out.argmax(1) == y).float().mean()))


def test_predict_on_held_out_rows_matches_the_checkpoint_loaded_by_hand(cli, trained, tmp_path):
    cfg, ckpt, _ = trained
    vx, vy, _, _, names = held_out(load_config(cfg))
    rows = [r for r in csv.DictReader(open(PENGUINS)) if r["bill_length_mm"] != "NA"]
    write(tmp_path / "in.csv", "id,species," + ",".join(FEATURES) + "\n" + "".join(
        f"p{i},{r['species']}," + ",".join(r[f] for f in FEATURES) + "\n" for i, r in enumerate(rows)))
    r = cli("predict", "--checkpoint", ckpt, "--data", tmp_path / "in.csv", "--keep", "id", "--out",
            tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(got[0]) == ["id", "prediction", *(f"p_{n}" for n in names)] and len(got) == len(rows)
    state = torch.load(ckpt, weights_only=True)
    mean, std = (np.array(state["data"]["x_scaling"][k]) for k in ("mean", "std"))
    x = torch.tensor((np.array([[float(r[f]) for f in FEATURES] for r in rows]) - mean) / std, dtype=torch.float32)
    probs = torch.softmax(by_hand(cfg, ckpt, x), dim=1)
    assert [g["id"] for g in got] == [f"p{i}" for i in range(len(rows))]  # input order, id kept
    assert [g["prediction"] for g in got] == [names[k] for k in probs.argmax(1).tolist()]
    got_p = np.array([[float(g[f"p_{n}"]) for n in names] for g in got])
    np.testing.assert_allclose(got_p, probs.numpy(), rtol=1e-5, atol=1e-7)
    j = json.loads(cli("predict", "--checkpoint", ckpt, "--data", tmp_path / "in.csv", "--format", "json").stdout)
    assert j["columns"] == ["prediction", *(f"p_{n}" for n in names)]
    assert [p["prediction"] for p in j["predictions"]] == [g["prediction"] for g in got]


def test_predict_regression_in_original_units(cli, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (120, 2))
    y = 1000 + 300 * x[:, 0] - 50 * x[:, 1]
    write(tmp_path / "r.csv", "a,b,y\n" + "".join(f"{a:.5f},{b:.5f},{t:.4f}\n" for (a, b), t in zip(x, y)))
    write(tmp_path / "r.yaml", "model: {input_size: 2, hidden_size: 8, output_size: 1}\noptimizer: {name: adam, lr: 0.01}\n"
          "data: {kind: csv, path: r.csv, target: y, batch_size: 16, validation: 0.25, standardize: true, "
          "standardize_target: true}\ntrain: {epochs: 3}\n")
    r = cli("train", "-c", tmp_path / "r.yaml", "--save", tmp_path / "r.pt", "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["summary"]["validation"]
    ev = json.loads(cli("evaluate", "--checkpoint", tmp_path / "r.pt", "--format", "json").stdout)
    assert (ev["loss"], ev["mae"], ev["r2"]) == (v["loss"], v["mae"], v["r2"])
    p = cli("predict", "--checkpoint", tmp_path / "r.pt", "--data", tmp_path / "r.csv")
    got = np.array([float(row["y"]) for row in csv.DictReader(io.StringIO(p.stdout))])
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    xs, ys = state["data"]["x_scaling"], state["data"]["y_scaling"]
    xin = torch.tensor((x.astype(np.float32) - np.array(xs["mean"])) / np.array(xs["std"]), dtype=torch.float32)
    expect = by_hand(tmp_path / "r.yaml", tmp_path / "r.pt", xin).numpy()[:, 0] * ys["std"][0] + ys["mean"][0]
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    assert abs(got.mean() - 1000) < 400  # original units, not z-scores


def test_an_old_checkpoint_without_data_still_evaluates(cli, tmp_path):
    assert cli("train", "-c", CONFIGS / "csv.yaml", "--steps", "5", "--save", tmp_path / "h.pt").exit_code == 0
    state = torch.load(tmp_path / "h.pt", weights_only=True)
    state.pop("data")
    torch.save(state, tmp_path / "old.pt")
    r = cli("evaluate", "--checkpoint", tmp_path / "old.pt", "--data", CONFIGS / "data" / "houses.csv",
            "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 120
    r = cli("evaluate", "--checkpoint", tmp_path / "old.pt")
    assert r.exit_code == 2 and "its run had no validation data; give --data CSV" in r.stderr


@pytest.mark.parametrize("text,args,message", [
    ("id,bill_length_mm,bill_depth_mm,flipper_length_mm\n1,2,3,4\n", [],
     "--data: column 'body_mass_g' is not in the header"),
    ("bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n1,2,3,4\n5,x,7,8\n", [],
     "in.csv:3: column 'bill_depth_mm': not a number (got 'x')"),
    ("bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n1,2,3,4\n5,NA,7,8\n", [],
     "in.csv:3: column 'bill_depth_mm': missing value"),
    ("bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n1,2,3,4\n", ["--keep", "id"],
     "--data: column 'id' is not in the header"),
    ("bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n1,2,3,4\n", ["--out", "in.csv"],
     "--out in.csv: is the same file as --data in.csv"),
    ("bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n1,2,3,4\n", ["--out", "p.txt"],
     "predictions file must end in .csv"),
])
def test_bad_predict_input_is_one_line_exit_2_nothing_written(cli, trained, tmp_path, monkeypatch, text, args,
                                                               message):
    _, ckpt, _ = trained
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "in.csv", text)
    r = cli("predict", "--checkpoint", ckpt, "--data", "in.csv", "--out", "p.csv", *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "p.csv").exists() and (tmp_path / "in.csv").read_text() == text


def test_evaluate_refuses_a_class_the_model_never_saw(cli, trained, tmp_path):
    _, ckpt, _ = trained
    write(tmp_path / "e.csv", "species," + ",".join(FEATURES) + "\nAdelie,39,18,181,3750\nEmperor,90,30,250,30000\n")
    r = cli("evaluate", "--checkpoint", ckpt, "--data", tmp_path / "e.csv")
    assert r.exit_code == 2 and "e.csv:3: column 'species': class 'Emperor' is not one the model was trained on" \
        in r.stderr and "(classes: Adelie, Chinstrap, Gentoo)" in r.stderr
    r = cli("evaluate", "--checkpoint", ckpt, "--data", tmp_path / "nope.csv")
    assert r.exit_code == 2 and "nope.csv: no such file (--data)" in r.stderr


def test_evaluate_on_the_checkpoints_own_training_rows_says_so(cli, trained, tmp_path):
    """--data FILE holding the training rows: the output counts them (the rows of the penguins file the run
    did not hold out: every complete row less the 69 validation rows); new rows get no such note."""
    cfg, ckpt, doc = trained
    with open(PENGUINS, newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(r[c] not in ("", "NA") for c in FEATURES + ["species"])]
    keys = {tuple(r[c] for c in FEATURES) for r in rows}
    assert len(keys) == len(rows)  # no two rows alike: the count below is exact
    complete = tmp_path / "complete.csv"
    with open(complete, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["species", *FEATURES], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    ev = json.loads(cli("evaluate", "--checkpoint", ckpt, "--data", complete, "--format", "json").stdout)
    assert ev["rows"] == len(rows) and ev["training_rows"] == len(rows) - 69
    table = cli("evaluate", "--checkpoint", ckpt, "--data", complete).stdout
    assert f"note: {len(rows) - 69} of the {len(rows)} rows are training rows of the checkpoint's run" in table
    assert "not held out" in table
    moved = tmp_path / "moved.csv"
    with open(moved, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["species", *FEATURES], extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "body_mass_g": str(float(r["body_mass_g"]) + 0.5)} for r in rows[:20])
    ev = json.loads(cli("evaluate", "--checkpoint", ckpt, "--data", moved, "--format", "json").stdout)
    assert ev["training_rows"] == 0
    assert "training rows" not in cli("evaluate", "--checkpoint", ckpt, "--data", moved).stdout

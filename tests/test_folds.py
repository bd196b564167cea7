"""train --folds K: stratified seeded folds, each fold scaled with its own training rows, the summary."""

import json

import numpy as np
import pytest

from backprop_cli.config import load_config
from backprop_cli.data.load import read_table
from backprop_cli.runs.folds import fold_ids, fold_table, raw_config
from conftest import CONFIGS, write

PENGUINS = CONFIGS / "data" / "penguins.csv"


def cfg_text(tmp_path, extra=""):
    return write(tmp_path / "p.yaml", f"""
seed: 3
device: cpu
model: {{input_size: 4, hidden_size: 6, output_size: 3}}
loss: cross_entropy
optimizer: {{name: adam, lr: 0.02}}
data: {{kind: csv, path: {PENGUINS}, target: species, missing: drop_rows, standardize: true, batch_size: 64,
        features: [bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g]{extra}}}
train: {{epochs: 2}}
""")


def test_folds_are_stratified_seeded_and_cover_every_row_once():
    strata = np.array([0] * 50 + [1] * 30 + [2] * 7)
    ids = fold_ids(len(strata), 5, seed=1, strata=strata)
    assert sorted(np.bincount(ids).tolist()) == [17, 17, 17, 18, 18]
    for c in range(3):
        counts = np.bincount(ids[strata == c], minlength=5)
        assert counts.max() - counts.min() <= 1  # each fold holds each class's share, give or take one
    assert (fold_ids(len(strata), 5, 1, strata) == ids).all()
    assert not (fold_ids(len(strata), 5, 2, strata) == ids).all()


def test_each_fold_is_scaled_with_its_own_training_rows(tmp_path):
    cfg = load_config(cfg_text(tmp_path))
    raw = read_table(raw_config(cfg))
    assert raw.val_x is None and raw.x_scaling is None and raw.samples == 342
    ids = fold_ids(raw.samples, 4, 3)
    train_rows, held = np.flatnonzero(ids != 0), np.flatnonzero(ids == 0)
    t = fold_table(raw, cfg, train_rows, held, "fold 1")
    x_train = raw.x[train_rows].astype(np.float64)
    mean, std = x_train.mean(0), x_train.std(0)
    assert t.x_scaling.mean == pytest.approx(mean.tolist(), rel=1e-9)
    assert t.x.mean(0) == pytest.approx(np.zeros(4), abs=1e-4)
    expected_val = (raw.x[held].astype(np.float64) - mean) / std
    assert np.allclose(t.val_x, expected_val, atol=1e-4)
    assert raw.x[0, 0] == pytest.approx(39.1)  # the raw table is not scaled in place


def test_train_folds_json_and_refusals(cli, tmp_path):
    cfg = cfg_text(tmp_path)
    r = cli("train", "-c", cfg, "--folds", 3, "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    cv = json.loads(r.stdout)["cross_validation"]
    folds = cv["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3] and sum(f["validation_rows"] for f in folds) == 342
    assert all(f["train_rows"] + f["validation_rows"] == 342 for f in folds) and cv["stratified"] is True
    for key in ("loss", "accuracy", "f1_macro", "roc_auc", "log_loss"):
        values = [f[key] for f in folds]
        assert cv["mean"][key] == pytest.approx(np.mean(values))
        assert cv["std"][key] == pytest.approx(np.std(values))
    assert "fold 1/3:" in r.stderr
    t = cli("train", "-c", cfg, "--folds", 3, "--threads", "1")
    assert "mean ± std over the 3 folds: loss" in t.stdout
    bad = cli("train", "-c", cfg, "--folds", 3, "--save", tmp_path / "m.pt")
    assert bad.exit_code == 2 and "--save cannot be used with it" in bad.output
    assert not (tmp_path / "m.pt").exists()


def test_train_seeds_fixes_the_split_and_moves_the_init(cli, tmp_path):
    cfg_path = cfg_text(tmp_path, ", validation: 0.25")
    cfg = load_config(cfg_path)
    moved = load_config(cfg_path, ["seed=4", "data.split_seed=3"])
    a, b = read_table(cfg), read_table(moved)
    assert np.array_equal(a.val_x, b.val_x) and a.split == b.split  # the split is data.split_seed's
    assert not np.array_equal(read_table(load_config(cfg_path, ["seed=4"])).val_x, a.val_x)  # default: seed
    r = cli("train", "-c", cfg_path, "--seeds", 2, "--format", "json", "--threads", "1")
    assert r.exit_code == 0, r.output
    rs = json.loads(r.stdout)["seeds"]
    assert [x["seed"] for x in rs["runs"]] == [3, 4] and rs["split_seed"] == 3
    assert rs["runs"][0]["loss"] != rs["runs"][1]["loss"]
    for key in ("loss", "accuracy", "f1_macro"):
        values = [x[key] for x in rs["runs"]]
        assert rs["mean"][key] == pytest.approx(np.mean(values)) and rs["std"][key] == pytest.approx(np.std(values))
    bad = cli("train", "-c", cfg_path, "--seeds", 2, "--folds", 2)
    assert bad.exit_code == 2 and "give --folds or --seeds, not both" in bad.output


def test_each_fold_fills_missing_cells_with_its_own_training_rows_statistics(tmp_path, cli, monkeypatch):
    """A table whose two folds differ: a's values are small in one fold and large in the other, c's most
    frequent value is x in one and y in the other. Fold k's missing cells (training and held-out rows) get
    the median / most frequent value of the other fold's rows, computed here, not the whole table's."""
    from backprop_cli.data.load import FoldEncoder, read_fold_table

    n, k, seed = 24, 2, 5
    ids = fold_ids(n, k, seed)
    rows = ["a,c,y"]
    for i in range(n):
        missing = i % 4 == 0
        a = "" if missing else str(i if ids[i] == 0 else 1000 + i)
        c = "" if i % 6 == 1 else ("x" if (ids[i] == 0) == (i % 5 != 0) else "y")
        rows.append(f"{a},{c},{i % 3}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg_path = write(tmp_path / "f.yaml", """
seed: 5
device: cpu
model: {input_size: auto, hidden_size: 4, output_size: 1}
optimizer: {name: sgd, lr: 0.01}
data: {kind: csv, path: d.csv, target: y, batch_size: 4,
       columns: {a: {missing: median}, c: {type: category, missing: most_frequent}}}
train: {steps: 3}
""")
    cfg = load_config(cfg_path)
    raw, encoder = read_fold_table(raw_config(cfg))
    assert encoder is not None and raw.feature_names == ["a", "c=x", "c=y"]
    a_cells = [row.split(",")[0] for row in rows[1:]]
    c_cells = [row.split(",")[1] for row in rows[1:]]
    whole_median = float(np.median([float(v) for v in a_cells if v]))
    for fold in range(k):
        train_rows, held = np.flatnonzero(ids != fold), np.flatnonzero(ids == fold)
        present = [float(a_cells[i]) for i in train_rows if a_cells[i]]
        median = float(np.median(present))
        values, counts = np.unique([c_cells[i] for i in train_rows if c_cells[i]], return_counts=True)
        frequent = str(values[np.argmax(counts)])
        assert median != whole_median  # the held-out fold would change it
        t = fold_table(raw, cfg, train_rows, held, f"fold {fold + 1}", encoder)
        for x, picked in ((t.x, train_rows), (t.val_x, held)):
            for row, i in zip(x, picked):
                assert row[0] == pytest.approx(median if not a_cells[i] else float(a_cells[i]))
                assert row[1:].tolist() == [float((c_cells[i] or frequent) == v) for v in ("x", "y")]
        assert t.encoding.columns[0].fill == median and t.encoding.columns[1].fill == frequent
    assert {raw.encoding.columns[0].fill} == {whole_median}  # the whole table's encoding is left as it was

    calls = []
    real = FoldEncoder.encode
    monkeypatch.setattr(FoldEncoder, "encode", lambda self, a, b: calls.append(len(b)) or real(self, a, b))
    r = cli("train", "-c", cfg_path, "--folds", k, "--format", "json", "--threads", 1)
    assert r.exit_code == 0, r.output
    assert sorted(calls) == sorted(np.bincount(ids).tolist())  # train --folds encodes each fold's rows itself

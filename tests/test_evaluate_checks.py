"""`evaluate` (and `train`, `predict`) on what a checkpoint or a file may hold (issue 23, items 4, 10 and 14):
classes bounded and the confusion matrix an array; data.targets that fit the model; a NUL byte in a path;
a file a checkpoint names, whose content never reaches an error line; the split's content digest; labels
normalised by value; missing-cell hints that the command can follow."""

import copy
import csv
import json
import shutil
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write
from test_evaluate_predict import trained  # noqa: F401  (the module's penguins run)
from test_validation import FEATURES, PENGUINS, penguins_yaml


def crafted(ckpt, tmp_path, change, name="x.pt"):
    """The checkpoint with ``change(state)`` applied, saved as plain tensors and dicts (loads under
    weights_only=True, as a crafted file would)."""
    state = copy.deepcopy(torch.load(ckpt, weights_only=True))
    change(state)
    torch.save(state, tmp_path / name)
    return tmp_path / name


def rows_csv(tmp_path, name="rows.csv"):
    return write(tmp_path / name, "species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\n"
                 "Gentoo,46.1,13.2,211,4500\n")


def one_error(r, fragment=""):
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.output, r.stderr
    assert fragment in r.stderr, r.stderr
    return r.stderr


# ------------------------------------------------ item 4: classes bounded, the confusion matrix an array

def _classes_csv(tmp_path, k, rows):
    rng = np.random.default_rng(1)
    write(tmp_path / "d.csv", "a,b,y\n" + "".join(f"{rng.random():.6f},{rng.random():.6f},c{i % k}\n"
                                                  for i in range(rows)))
    return write(tmp_path / "c.yaml", f"model: {{input_size: 2, hidden_size: 8, output_size: {k}}}\n"
                 "loss: cross_entropy\ndata: {kind: csv, path: d.csv, target: y, batch_size: 50, validation: 0.25}\n")


def test_more_classes_than_the_bound_is_one_line_in_train_init_and_a_checkpoint(cli, trained, tmp_path):  # noqa: F811
    from backprop_cli.limits import MAX_CLASSES

    cfg = _classes_csv(tmp_path, MAX_CLASSES + 1, MAX_CLASSES + 1)
    one_error(cli("train", "-c", cfg, "--steps", 1), f"column 'y': 1,001 classes, more than the 1,000 a "
              "classification may have")
    one_error(cli("init", tmp_path / "i.yaml", "--csv", tmp_path / "d.csv", "--target", "y"),
              "1001 distinct values: not a class column")  # init's bound is the same number
    _, ckpt, _ = trained
    names = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    bad = crafted(ckpt, tmp_path, lambda s: s["data"].__setitem__("classes", names))
    for args in (["evaluate", "--checkpoint", bad], ["predict", "--checkpoint", bad, "--data", rows_csv(tmp_path)]):
        one_error(cli(*args), "1,001 classes, more than the 1,000")
    synthetic = write(tmp_path / "s.yaml", "model: {input_size: 2, hidden_size: 4, output_size: 1001}\n"
                      "loss: cross_entropy\ndata: {kind: synthetic, targets: classes, samples: 64, batch_size: 8}\n")
    one_error(cli("train", "-c", synthetic, "--steps", 1), "model.output_size: 1,001 classes, more than the 1,000")


def test_a_confusion_matrix_beyond_the_table_size_is_in_the_json_whole(cli, tmp_path):
    """40 classes: the table says where the matrix is; the JSON has it, and its accuracy and per-class
    numbers equal the counts of predict's own predictions on the same rows (the oracle)."""
    cfg = _classes_csv(tmp_path, 40, 400)
    assert cli("train", "-c", cfg, "--steps", 5, "--save", tmp_path / "m.pt", "-q").exit_code == 0
    r = cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "d.csv")
    assert r.exit_code == 0 and "confusion matrix: 40 × 40 classes, more than the 30 shown as a table; " \
        "--format json has it whole" in r.stdout, r.output
    doc = json.loads(cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "d.csv",
                         "--format", "json").stdout)
    pred = [json.loads(line)["prediction"] for line in cli("predict", "--checkpoint", tmp_path / "m.pt", "--data",
                                                           tmp_path / "d.csv", "--format", "jsonl").stdout.splitlines()]
    truth = [line.split(",")[2] for line in (tmp_path / "d.csv").read_text().splitlines()[1:]]
    names = doc["classes"]
    want = np.zeros((40, 40), dtype=int)
    for t, p in zip(truth, pred):
        want[names.index(t), names.index(p)] += 1
    assert np.array_equal(np.array(doc["confusion"]), want)
    assert doc["accuracy"] == pytest.approx(np.trace(want) / want.sum(), abs=1e-12)
    for i, row in enumerate(doc["per_class"]):
        assert row["support"] == want[i].sum()
        assert row["precision"] == pytest.approx(want[i, i] / want[:, i].sum() if want[:, i].sum() else 0.0)


def test_a_thousand_classes_cost_an_array_and_seconds_not_lists_and_minutes():
    """MAX_CLASSES classes over 3,000 rows: the confusion matrix is one int64 array (its counts checked
    against numpy's own), the Python objects measure allocates stay within a fixed multiple (4×) of that
    array's bytes, and the JSON document (a row per line) is written in well under the half minute that one
    number per line took."""
    import tracemalloc

    from torch import nn

    from backprop_cli.limits import MAX_CLASSES
    from backprop_cli.render.documents import evaluate_document, json_text
    from backprop_cli.runs.evaluation import measure

    class Fixed(nn.Module):
        def forward(self, x):
            return x

    k, n = MAX_CLASSES, 3000
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)
    tracemalloc.start()
    try:
        r = measure(Fixed(), nn.CrossEntropyLoss(), "cross_entropy", logits, y, classes=[f"c{i}" for i in range(k)],
                    detail=True, batch_rows=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    conf = r["confusion"]
    assert isinstance(conf, np.ndarray) and conf.shape == (k, k) and conf.dtype == np.int64
    want = np.zeros((k, k), dtype=np.int64)
    np.add.at(want, (y.numpy(), logits.argmax(1).numpy()), 1)
    assert np.array_equal(conf, want) and r["accuracy"] == np.trace(want) / n
    assert peak < 4 * conf.nbytes, (peak, conf.nbytes)
    start = time.perf_counter()
    text = json_text(evaluate_document({"checkpoint": "c.pt", "step": 1, "data": "d", "rows": n, **r}))
    assert time.perf_counter() - start < 5
    assert np.array_equal(np.array(json.loads(text)["confusion"]), want)
    assert text.count("\n") < 2 * k + 20 * k  # a matrix row per line (and the per-class entries), not k² lines


# ------------------------------------------------ item 10: what the checkpoint names must fit its model

def test_targets_that_do_not_fit_the_model_are_one_line(cli, trained, tmp_path):  # noqa: F811
    _, ckpt, _ = trained
    bad = crafted(ckpt, tmp_path, lambda s: s["data"].__setitem__("targets", ["species", "island"]))
    for args in (["evaluate", "--checkpoint", bad], ["evaluate", "--checkpoint", bad, "--data", rows_csv(tmp_path)],
                 ["predict", "--checkpoint", bad, "--data", rows_csv(tmp_path)]):
        r = cli(*args)
        assert one_error(r) == (f"error: {bad}: data.targets names 2 columns ('species', 'island') but the model's "
                                "cross_entropy takes 1 label column\n") and r.stdout == ""


def test_regression_targets_that_do_not_fit_the_model_are_one_line(cli, tmp_path):
    write(tmp_path / "d.csv", "a,b,y\n" + "".join(f"{i},{i % 3},{i / 10}\n" for i in range(30)))
    write(tmp_path / "c.yaml", "model: {input_size: 2, hidden_size: 4, output_size: 1}\nloss: mse\n"
          "data: {kind: csv, path: d.csv, target: y, batch_size: 10, validation: 0.2}\n")
    assert cli("train", "-c", tmp_path / "c.yaml", "--steps", 2, "--save", tmp_path / "r.pt", "-q").exit_code == 0
    bad = crafted(tmp_path / "r.pt", tmp_path, lambda s: s["data"].__setitem__("targets", ["y", "a"]))
    for args in (["evaluate", "--checkpoint", bad], ["evaluate", "--checkpoint", bad, "--data", tmp_path / "d.csv"],
                 ["predict", "--checkpoint", bad, "--data", tmp_path / "d.csv"]):
        assert one_error(cli(*args)) == (f"error: {bad}: data.targets names 2 columns ('y', 'a') but the model's mse "
                                         "takes 1 target column\n")


def test_a_nul_byte_in_a_path_is_one_line(cli, trained, tmp_path):  # noqa: F811
    _, ckpt, _ = trained

    def relative(s, base):
        s["config"]["data"]["path"] = PENGUINS.name
        s["data"]["base_dir"] = base
    bad = crafted(ckpt, tmp_path, lambda s: relative(s, str(PENGUINS.parent) + "/\x00"))
    for args in (["evaluate", "--checkpoint", bad], ["predict", "--checkpoint", bad, "--data", rows_csv(tmp_path)]):
        one_error(cli(*args), "data.base_dir: a folder name cannot hold a NUL byte")
    good = crafted(ckpt, tmp_path, lambda s: relative(s, str(PENGUINS.parent)), "good.pt")
    assert cli("evaluate", "--checkpoint", good).exit_code == 0
    nul_path = crafted(ckpt, tmp_path, lambda s: s["config"]["data"].__setitem__("path", "a\x00b.csv"), "p.pt")
    one_error(cli("evaluate", "--checkpoint", nul_path), "data.path: a path cannot hold a NUL byte")
    cfg = write(tmp_path / "n.yaml", penguins_yaml(tmp_path).read_text().replace(str(PENGUINS), '"a\\0b.csv"'))
    one_error(cli("train", "-c", cfg, "--steps", 1), "data.path: a path cannot hold a NUL byte (got 'a\\x00b.csv')")


@pytest.mark.parametrize("content", [
    "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    "species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\nsecret-token-1,46.1,13.2,211,4500\n",
    "species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\nGentoo,secret-token-2,13.2,211,4500\n",
])
def test_a_file_the_checkpoint_names_is_named_in_the_error_never_shown(cli, trained, tmp_path, content):  # noqa: F811
    """``config.data.path: /etc/passwd`` (here a file like it): evaluate names the file and the problem, and
    none of the file's lines, cells or header reach the error."""
    _, ckpt, _ = trained
    secret = write(tmp_path / "secret.txt", content)
    bad = crafted(ckpt, tmp_path, lambda s: s["config"]["data"].__setitem__("path", str(secret)))
    err = one_error(cli("evaluate", "--checkpoint", bad), str(secret)).replace(str(secret), "FILE")
    for line in content.splitlines():
        for cell in line.split(","):
            if cell not in ("species", "Adelie", *FEATURES) and not cell.replace(".", "").isdigit():
                assert cell not in err, err
    assert "root" not in err and "secret-token" not in err


def test_a_training_file_edited_in_place_is_not_its_own_validation_rows(cli, tmp_path):
    """The split's digest covers the rows' content, not only their indices: one cell changed, the same row
    count; a checkpoint written before the content digest (no split.content) still evaluates."""
    data = shutil.copy(PENGUINS, tmp_path / "p.csv")
    write(tmp_path / "p.yaml", penguins_yaml(tmp_path, "steps: 2").read_text().replace(str(PENGUINS), str(data)))
    assert cli("train", "-c", tmp_path / "p.yaml", "--save", tmp_path / "c.pt", "-q").exit_code == 0
    split = torch.load(tmp_path / "c.pt", weights_only=True)["data"]["split"]
    assert len(split["content"]) == 16 and split["digest"]
    before = json.loads(cli("evaluate", "--checkpoint", tmp_path / "c.pt", "--format", "json").stdout)
    lines = data.read_text().splitlines()
    assert ",181," in lines[1]
    lines[1] = lines[1].replace(",181,", ",182,")
    data.write_text("\n".join(lines) + "\n")
    r = cli("evaluate", "--checkpoint", tmp_path / "c.pt")
    assert one_error(r) == (f"error: {data}: the data no longer gives the validation rows the checkpoint's run held "
                            "out (the file changed); give --data CSV\n")
    old = crafted(tmp_path / "c.pt", tmp_path, lambda s: s["data"]["split"].pop("content"), "old.pt")
    r = cli("evaluate", "--checkpoint", old, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == before["rows"], r.output


def test_the_content_digest_sees_every_cell_and_only_the_rows_used():
    from backprop_cli.data.readers import Text
    from backprop_cli.data.split import content_digest

    cols = {"a": np.array([1.0, 2.0, np.nan, 4.0], dtype=np.float32), "t": Text(np.array([0, 1, -1, 0], np.int32),
                                                                              ["x", "y"])}
    rows = np.array([0, 1, 3])
    base = content_digest(cols, rows, ["a", "t"])
    assert base == content_digest(cols, rows, ["a", "t"])
    changed = dict(cols, a=np.array([1.0, 2.5, np.nan, 4.0], dtype=np.float32))
    assert content_digest(changed, rows, ["a", "t"]) != base
    assert content_digest(dict(cols, t=Text(np.array([0, 0, -1, 0], np.int32), ["x", "y"])), rows, ["a", "t"]) != base
    # a value only in a row that is not used (a row without a target) does not change the digest
    other = dict(cols, t=Text(np.array([0, 1, 2, 0], np.int32), ["x", "y", "z"]))
    assert content_digest(other, rows, ["a", "t"]) == base


# ------------------------------------------------ item 14: labels by value, hints that can be followed

@pytest.mark.parametrize("labels, named", [
    (["1", "1.0", "2", "01", "2e0"], ["1", "1", "2", "1", "2"]),
    (["0.5", "0.50", "1"], ["0.5", "0.5", "1"]),
    (["a", "1", "1.0"], ["a", "1", "1"]),
    (["10", "9", "9.0"], ["10", "9", "9"]),
])
def test_labels_that_are_the_same_number_are_one_class(labels, named):
    from backprop_cli.data.labels import order_classes

    names, index = order_classes(labels)
    assert [names[i] for i in index] == named and len(names) == len(set(named))
    assert names == (sorted(set(named), key=float) if all(n != "a" for n in named) else sorted(set(named)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-5, 5).map(str), st.integers(-5, 5).map(lambda i: f"{i}.0"),
                          st.sampled_from(["a", "b", "0.5", "0.50", "1e0"])), min_size=1, max_size=8))
def test_a_label_is_its_value_whatever_its_spelling(labels):
    """Two labels are one class exactly when they are the same finite number or the same text."""
    from backprop_cli.data.labels import order_classes

    names, index = order_classes(labels)

    def value(t):
        try:
            return ("n", float(t))
        except ValueError:
            return ("t", t)
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            assert (index[i] == index[j]) == (value(a) == value(b)), (a, b)
    assert len(names) == len({value(t) for t in labels})


def test_labels_1_and_1_0_train_one_class_and_inf_is_one_line(cli, tmp_path):
    body = "".join(f"{i % 7},{i % 5},{['1', '1.0', '2', '2.0'][i % 4]}\n" for i in range(40))
    write(tmp_path / "d.csv", "a,b,y\n" + body)
    cfg = write(tmp_path / "c.yaml", "model: {input_size: 2, hidden_size: 4, output_size: 2}\nloss: cross_entropy\n"
                "data: {kind: csv, path: d.csv, target: y, batch_size: 8}\n")
    r = cli("train", "-c", cfg, "--steps", 1, "--save", tmp_path / "m.pt", "-q")
    assert r.exit_code == 0, r.output
    assert torch.load(tmp_path / "m.pt", weights_only=True)["data"]["classes"] == ["1", "2"]
    for bad in ("inf", "-Infinity"):
        write(tmp_path / "d.csv", "a,b,y\n" + body + f"3,4,{bad}\n")
        one_error(cli("train", "-c", cfg, "--steps", 1), f"d.csv:42: column 'y': label '{bad}' is not a finite number")
        one_error(cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "d.csv"),
                  f"d.csv:42: column 'y': label '{bad}' is not a finite number")


def test_missing_cell_hints_can_be_followed(cli, tmp_path):
    """A model trained with missing: error, then rows with empty cells: evaluate's hint names a --set that
    works; --config with drop_rows applies it (the issue's case: the hint said to set what the config had);
    a fill the model never learnt is one line; predict's hint names no config key it cannot take."""
    complete = tmp_path / "complete.csv"
    complete.write_text("".join(line + "\n" for line in PENGUINS.read_text().splitlines() if ",NA," not in line))
    base = penguins_yaml(tmp_path, "steps: 3").read_text()
    write(tmp_path / "e.yaml", base.replace(str(PENGUINS), str(complete)).replace("missing: drop_rows",
                                                                                  "missing: error"))
    assert cli("train", "-c", tmp_path / "e.yaml", "--save", tmp_path / "e.pt", "-q").exit_code == 0
    drop = write(tmp_path / "drop.yaml", base)  # the penguins file (with NA cells), missing: drop_rows
    ckpt = tmp_path / "e.pt"
    err = one_error(cli("evaluate", "--checkpoint", ckpt, "--data", PENGUINS), "penguins.csv:5: column "
                    "'bill_length_mm': missing value; the model was trained with missing: error; evaluate --set "
                    "data.columns.bill_length_mm.missing=drop_rows (or data.missing=drop_rows) leaves such rows out")
    assert "data.missing: drop_rows" not in err
    with open(PENGUINS, newline="") as f:  # the rows drop_rows keeps: every feature present
        complete_rows = sum(all(r[c] not in ("", "NA") for c in FEATURES) for r in csv.DictReader(f))
    for extra in (["--set", "data.missing=drop_rows"], ["--set", "data.columns.bill_length_mm.missing=drop_rows"],
                  ["--config", drop]):
        r = cli("evaluate", "--checkpoint", ckpt, "--data", PENGUINS, "--format", "json", *extra)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["rows"] == complete_rows
    one_error(cli("evaluate", "--checkpoint", ckpt, "--data", PENGUINS, "--set", "data.missing=mean"),
              "data.missing: mean for column 'bill_length_mm': the model was trained with missing: error and holds "
              "no mean fill for it")
    err = one_error(cli("predict", "--checkpoint", ckpt, "--data", PENGUINS), "the model was trained with missing: "
                    "error, which fills nothing: train with a fill policy (data.missing: auto, the default)")
    assert "drop_rows" not in err

"""backprop export and the Python API: ONNX run by onnxruntime on the raw columns, torch.export loaded by
torch.export.load, safetensors loaded by safetensors alone and by evaluate/predict, bp.load — each held to
`backprop predict` on the same rows (the oracle: runs.prediction.predict, and the CLI itself in a process)."""

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, write

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# numbers with empty cells, a category with empty cells, a binary column, a second category
TRAIN = """\
x1,x2,colour,flag,size,y,label,b1,b2
0.5,1.0,red,yes,S,1.5,cat,1,0
1.5,,blue,no,M,2.5,dog,0,1
-0.3,2.0,green,yes,L,0.2,cat,1,1
2.2,0.1,,no,S,3.1,bird,0,0
,1.1,red,yes,M,1.0,dog,1,0
0.9,-1.2,blue,,L,2.0,bird,0,1
1.1,0.4,green,no,S,1.7,cat,1,1
-1.0,0.9,red,yes,M,0.3,dog,0,0
0.2,0.0,blue,no,L,1.2,bird,1,0
1.7,1.6,green,yes,S,2.9,cat,0,1
"""
# new rows: empty cells in every column, a colour and a size training never saw
NEW = """\
x1,x2,colour,flag,size
0.1,0.2,red,yes,S
,,,,
3.0,-2.0,purple,no,XL
1.0,0.5,green,,M
-0.5,1.5,blue,yes,
"""
TASKS = {"classes": ("cross_entropy", "label", 3), "binary": ("bce_with_logits", "[b1, b2]", 2),
         "regression": ("mse", "y", 1)}
COLUMNS = """\
  columns:
    x1: {type: number, indicator: true}
    x2: {type: number, missing: mean}
    colour: {type: category, indicator: true}
    flag: {type: binary}
    size: {type: category%s}
"""


def trained(tmp_path, task="classes", activation="relu", sizes="hidden_size: 5", size_spec="",
            extra="standardize_target: true"):
    loss, target, out = TASKS[task]
    write(tmp_path / "t.csv", TRAIN)
    write(tmp_path / "new.csv", NEW)
    cfg = write(tmp_path / "c.yaml", textwrap.dedent(f"""\
        model: {{input_size: auto, {sizes}, output_size: {out}, activation: {activation}}}
        loss: {loss}
        optimizer: {{name: adam, lr: 0.05}}
        data:
          kind: csv
          path: t.csv
          target: {target}
          features: [x1, x2, colour, flag, size]
          validation: 0.2
          batch_size: 4
          standardize: true
        """) + COLUMNS % size_spec + (f"  {extra}\n" if task == "regression" and extra else "")
        + "train: {steps: 6}\n")
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    r = CliRunner().invoke(app, ["train", "-c", str(cfg), "--save", str(tmp_path / "m.pt"), "-q"])
    assert r.exit_code == 0, r.output
    return tmp_path / "m.pt"


def export(tmp_path, ckpt, name, *more):
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    r = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / name), *more])
    assert r.exit_code == 0, r.output
    return tmp_path / name


def predicted(ckpt, data):
    from backprop_cli.runs.prediction import load_trained, predict

    return predict(load_trained(ckpt), data)


def raw_feeds(session, data):
    """The file's cells as a user hands them to the graph: numbers float32 (NaN where empty), texts as written."""
    rows = list(csv.DictReader(open(data)))
    feeds = {}
    for i in session.get_inputs():
        cells = [r[i.name].strip() for r in rows]
        if i.type == "tensor(float)":
            feeds[i.name] = np.array([[float(c) if c else np.nan] for c in cells], np.float32)
        else:
            feeds[i.name] = np.array([[c] for c in cells], dtype=object)
    return feeds


def run_onnx(path, data):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, raw_feeds(session, data))))


def assert_onnx_equals_predict(tmp_path, ckpt, task):
    path = export(tmp_path, ckpt, "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    header, rows = predicted(ckpt, tmp_path / "new.csv")
    got = run_onnx(path, tmp_path / "new.csv")
    if task == "classes":
        p = np.array([r[1:] for r in rows])
        np.testing.assert_allclose(got["probabilities"], p, rtol=1e-5, atol=1e-7)
        assert list(got["label"]) == [r[0] for r in rows]
    elif task == "binary":
        np.testing.assert_allclose(got["probabilities"], np.array([r[2:] for r in rows]), rtol=1e-5, atol=1e-7)
        assert got["label"].tolist() == [r[:2] for r in rows]
    else:
        assert list(got) == ["y"] and got["y"].shape == (5, 1)
        np.testing.assert_allclose(got["y"][:, 0], [r[0] for r in rows], rtol=1e-5)
    return got


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One trained checkpoint per task (training is the slow part), shared by the activation matrix."""
    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = trained(tmp_path_factory.mktemp(task), task)
        return cache[task]

    return get


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity"])
@pytest.mark.parametrize("task", list(TASKS))
def test_onnx_on_raw_columns_equals_predict(tmp_path, base, task, activation):
    """The trained weights under each activation (activations hold no weights: the checkpoint's config names
    another, and predict and the graph both run it)."""
    import torch

    state = torch.load(base(task), weights_only=True)
    state["config"]["model"]["activation"] = {"name": activation}
    torch.save(state, tmp_path / "m.pt")
    write(tmp_path / "new.csv", NEW)
    assert_onnx_equals_predict(tmp_path, tmp_path / "m.pt", task)


CURES = {"batch_norm": "hidden_sizes: [6, 5], norm: batch",
         "layer_norm": "hidden_sizes: [6, 5], norm: layer",
         "dropout": "hidden_sizes: [6, 5], dropout: [0.3, 0.1]",
         "residual": "hidden_sizes: [5, 5, 5], residual: true",
         "all_cures": "hidden_sizes: [5, 5, 5], norm: batch, dropout: 0.2, residual: true"}


@pytest.mark.parametrize("case", ["deep", "embedding", "no_bias", "plain_target", "two_targets", *CURES])
def test_onnx_of_each_architecture_equals_predict(tmp_path, case):
    task = "regression"
    kw = {"deep": {"sizes": "hidden_sizes: [6, 5, 4]"},
          **{name: {"sizes": sizes, "task": "classes"} for name, sizes in CURES.items()},
          "embedding": {"size_spec": ", encoding: embedding, embedding_size: 2", "task": "classes"},
          "no_bias": {"sizes": "hidden_size: 4, bias: false", "task": "binary"},
          "plain_target": {"extra": ""}}.get(case, {})
    if case == "two_targets":
        trained(tmp_path, "regression")  # its files, trained again on two targets
        ckpt = _two_targets(tmp_path)
        path = export(tmp_path, ckpt, "m.onnx")
        got = run_onnx(path, tmp_path / "new.csv")
        header, rows = predicted(ckpt, tmp_path / "new.csv")
        assert list(got) == header == ["y", "x9"]
        for k, name in enumerate(header):
            np.testing.assert_allclose(got[name][:, 0], [r[k] for r in rows], rtol=1e-5)
        return
    task = kw.pop("task", task)
    ckpt = trained(tmp_path, task, **kw)
    assert_onnx_equals_predict(tmp_path, ckpt, task)


def _two_targets(tmp_path):
    text = TRAIN.replace("b1,b2\n", "b1,b2,x9\n", 1)
    lines = text.splitlines()
    write(tmp_path / "t.csv", "\n".join([lines[0]] + [f"{ln},{i * 0.7 - 2}" for i, ln in enumerate(lines[1:])]) + "\n")
    cfg = (tmp_path / "c.yaml").read_text().replace("target: y", "target: [y, x9]").replace("output_size: 1",
                                                                                             "output_size: 2")
    write(tmp_path / "c.yaml", cfg)
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    r = CliRunner().invoke(app, ["train", "-c", str(tmp_path / "c.yaml"), "--save", str(tmp_path / "m2.pt"), "-q"])
    assert r.exit_code == 0, r.output
    return tmp_path / "m2.pt"


def test_onnx_graph_takes_one_input_per_column_and_the_real_held_out_table(tmp_path):
    """Penguins (text categories, empty cells): trained on the table, run on the held-out new birds."""
    data = ROOT / "configs" / "data"
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    r = CliRunner().invoke(app, ["init", str(tmp_path / "p.yaml"), "--csv", str(data / "penguins.csv"),
                                 "--target", "species"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["train", "-c", str(tmp_path / "p.yaml"), "--steps", "20", "--save",
                                 str(tmp_path / "p.pt"), "-q"])
    assert r.exit_code == 0, r.output
    path = export(tmp_path, tmp_path / "p.pt", "p.onnx")
    model = onnx.load(str(path))
    types = {i.name: (i.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
             for i in model.graph.input}
    assert types == {"island": (onnx.TensorProto.STRING, ["N", 1]), "sex": (onnx.TensorProto.STRING, ["N", 1]),
                     **{n: (onnx.TensorProto.FLOAT, ["N", 1]) for n in ("bill_length_mm", "bill_depth_mm",
                                                                         "flipper_length_mm", "body_mass_g", "year")}}
    meta = json.loads({p.key: p.value for p in model.metadata_props}["backprop"])
    assert meta["task"] == "classes" and meta["data"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    got = run_onnx(path, data / "penguins_new.csv")
    header, rows = predicted(tmp_path / "p.pt", data / "penguins_new.csv")
    np.testing.assert_allclose(got["probabilities"], np.array([r[1:] for r in rows]), rtol=1e-5, atol=1e-7)
    assert list(got["label"]) == [r[0] for r in rows]


def test_onnx_batch_is_dynamic(tmp_path):
    ckpt = trained(tmp_path, "regression")
    path = export(tmp_path, ckpt, "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = raw_feeds(session, tmp_path / "new.csv")
    whole = session.run(None, feeds)[0]
    for n in (1, 3):
        part = session.run(None, {k: v[:n] for k, v in feeds.items()})[0]
        np.testing.assert_allclose(part, whole[:n], rtol=1e-6)


def test_torch_export_runs_and_equals_predict(tmp_path):
    import torch

    from backprop_cli.runs.prediction import load_trained, read_rows

    ckpt = trained(tmp_path, "classes", "tanh", size_spec=", encoding: embedding, embedding_size: 2")
    path = export(tmp_path, ckpt, "m.pt2")
    extra = {"backprop.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    meta = json.loads(extra["backprop.json"])
    assert meta["data"]["features"] == ["x1", "x2", "colour", "flag", "size"] and meta["task"] == "classes"
    x, _, _, _ = read_rows(load_trained(ckpt), tmp_path / "new.csv", targets=False)
    header, rows = predicted(ckpt, tmp_path / "new.csv")
    for n in (1, 5):  # the batch dimension is dynamic
        p = torch.softmax(program.module()(torch.from_numpy(x[:n])), dim=1).detach().numpy()
        np.testing.assert_allclose(p, np.array([r[1:] for r in rows[:n]]), rtol=1e-5, atol=1e-7)


def test_safetensors_holds_every_weight_without_pickle_and_predict_takes_it(tmp_path, cli):
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file

    ckpt = trained(tmp_path, "classes")
    path = export(tmp_path, ckpt, "m.safetensors")
    state = torch.load(ckpt, weights_only=True)
    tensors = load_file(str(path))  # numpy only: no torch, no pickle
    assert sorted(tensors) == sorted(state["model"]) == ["layer1.bias", "layer1.weight", "layer2.bias",
                                                          "layer2.weight"]
    for name, t in tensors.items():
        np.testing.assert_array_equal(t, state["model"][name].numpy())
    with safe_open(str(path), "np") as f:
        meta = json.loads(f.metadata()["backprop"])
    assert meta["task"] == "classes" and meta["step"] == state["step"] == 6
    assert meta["data"]["encoding"] == state["data"]["encoding"]
    assert meta["data"]["x_scaling"] == state["data"]["x_scaling"]
    for command in (["predict", "--data", tmp_path / "new.csv"], ["evaluate", "--data", tmp_path / "t.csv",
                                                                   "--format", "json"]):
        a = cli(*command[:1], "--checkpoint", ckpt, *command[1:])
        b = cli(*command[:1], "--checkpoint", path, *command[1:])
        assert a.exit_code == b.exit_code == 0, b.output
        assert a.stdout.replace(str(ckpt), "X") == b.stdout.replace(str(path), "X")


def test_norm_dropout_and_residual_export_in_eval_mode_to_torch_export_and_safetensors(tmp_path, cli):
    """Batch norm's running statistics travel in every format; dropout is off in every export (eval mode)."""
    import torch
    from safetensors.numpy import load_file

    from backprop_cli.runs.prediction import load_trained, read_rows

    ckpt = trained(tmp_path, "classes", sizes=CURES["all_cures"])
    state = torch.load(ckpt, weights_only=True)
    stats = [n for n in state["model"] if n.endswith(("running_mean", "running_var"))]
    assert len(stats) == 6 and all(state["model"][n].abs().sum() > 0 for n in stats)
    tensors = load_file(str(export(tmp_path, ckpt, "m.safetensors")))
    assert sorted(tensors) == sorted(state["model"])
    for name, t in tensors.items():
        np.testing.assert_array_equal(t, state["model"][name].numpy())
    a = cli("predict", "--checkpoint", ckpt, "--data", tmp_path / "new.csv")
    b = cli("predict", "--checkpoint", tmp_path / "m.safetensors", "--data", tmp_path / "new.csv")
    assert a.exit_code == b.exit_code == 0 and a.stdout == b.stdout, b.output

    program = torch.export.load(str(export(tmp_path, ckpt, "m.pt2")))
    x, _, _, _ = read_rows(load_trained(ckpt), tmp_path / "new.csv", targets=False)
    header, rows = predicted(ckpt, tmp_path / "new.csv")
    runs = [torch.softmax(program.module()(torch.from_numpy(x)), dim=1).detach().numpy() for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])  # no dropout mask: the same answer twice
    np.testing.assert_allclose(runs[0], np.array([r[1:] for r in rows]), rtol=1e-5, atol=1e-7)


def test_resume_refuses_safetensors_in_one_line(tmp_path, cli):
    ckpt = trained(tmp_path, "classes")
    path = export(tmp_path, ckpt, "m.safetensors")
    r = cli("train", "-c", tmp_path / "c.yaml", "--resume", path)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "holds the weights only" in r.stderr, r.output


def test_crafted_safetensors_is_one_line(tmp_path, cli):
    from safetensors.numpy import save_file

    ckpt = trained(tmp_path, "classes")
    path = export(tmp_path, ckpt, "m.safetensors")
    bad = {"plain": tmp_path / "plain.safetensors", "nan": tmp_path / "nan.safetensors",
           "junk": tmp_path / "junk.safetensors"}
    save_file({"layer1.weight": np.zeros((5, 2), np.float32)}, str(bad["plain"]))
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["layer1.weight"][0, 0] = np.nan
    save_file(tensors, str(bad["nan"]), metadata=meta)
    bad["junk"].write_bytes(path.read_bytes()[:40])
    for name, p in bad.items():
        r = cli("predict", "--checkpoint", p, "--data", tmp_path / "new.csv")
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (name, r.output)
    assert "not one backprop export wrote" in cli("predict", "--checkpoint", bad["plain"], "--data",
                                                  tmp_path / "new.csv").stderr
    assert "non-finite" in cli("predict", "--checkpoint", bad["nan"], "--data", tmp_path / "new.csv").stderr


def test_bad_export_input_is_one_line_and_writes_nothing(tmp_path, cli):
    ckpt = trained(tmp_path, "classes")
    write(tmp_path / "fake.pt", "not a checkpoint")
    cases = {
        "suffix": (["--out", tmp_path / "m.txt"], "the suffix names no format"),
        "same file": (["--out", ckpt, "--format", "safetensors"], "is the same file as --checkpoint"),
        "opset": (["--out", tmp_path / "m.onnx", "--opset", "99"], "--opset: the installed onnx"),
        "low opset": (["--out", tmp_path / "m.onnx", "--opset", "7"], "--opset: the installed onnx"),
        "not ours": (["--out", tmp_path / "m.onnx"], "not a readable checkpoint"),
        "no folder": (["--out", tmp_path / "nope" / "m.onnx"], "does not exist"),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (args, words) in cases.items():
        src = tmp_path / "fake.pt" if name == "not ours" else ckpt
        r = cli("export", "--checkpoint", src, *args)
        assert r.exit_code == 2, (name, r.output)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and words in r.stderr, (name, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_format_follows_the_suffix_and_format_overrides_it(tmp_path):
    ckpt = trained(tmp_path, "regression")
    assert export(tmp_path, ckpt, "a.onnx").read_bytes()[:2] != b"PK"
    assert onnx.load(str(tmp_path / "a.onnx")).graph.output[0].name == "y"
    assert export(tmp_path, ckpt, "b.pt2").read_bytes()[:2] == b"PK"  # a zip archive
    path = export(tmp_path, ckpt, "weights.bin", "--format", "safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        assert f.metadata()["format"] == "backprop"


# ------------------------------------------------------------------ the Python API


def test_api_equals_the_cli_for_paths_tables_and_dicts(tmp_path):
    import pandas as pd
    import pyarrow as pa

    import backprop_cli as bp

    ckpt = trained(tmp_path, "classes")
    out = subprocess.run([sys.executable, "-m", "backprop_cli", "predict", "--checkpoint", str(ckpt), "--data",
                          str(tmp_path / "new.csv"), "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    labels = [r["prediction"] for r in doc["predictions"]]
    probs = np.array([[r[c] for c in doc["columns"][1:]] for r in doc["predictions"]])
    m = bp.load(ckpt)
    assert list(m.classes_) == ["bird", "cat", "dog"]
    assert list(m.feature_names_in_) == ["x1", "x2", "colour", "flag", "size"]
    frame = pd.read_csv(tmp_path / "new.csv", keep_default_na=False, na_values=[""])
    for data in (tmp_path / "new.csv", str(tmp_path / "new.csv"), frame, pa.Table.from_pandas(frame),
                 {c: frame[c].tolist() for c in frame.columns}):
        assert list(m.predict(data)) == labels
        np.testing.assert_allclose(m.predict_proba(data), probs, rtol=1e-6)
    # safetensors: the same model
    st = bp.load(export(tmp_path, ckpt, "m.safetensors"))
    np.testing.assert_allclose(st.predict_proba(frame), probs, rtol=1e-6)
    ev = subprocess.run([sys.executable, "-m", "backprop_cli", "evaluate", "--checkpoint", str(ckpt), "--data",
                         str(tmp_path / "t.csv"), "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    want = json.loads(ev.stdout)
    got = m.evaluate(tmp_path / "t.csv")
    assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-6)


def test_api_regression_and_binary(tmp_path):
    import backprop_cli as bp

    ckpt = trained(tmp_path, "regression")
    header, rows = predicted(ckpt, tmp_path / "new.csv")
    m = bp.load(ckpt)
    assert m.classes_ is None and m.predict(tmp_path / "new.csv").shape == (5,)
    np.testing.assert_allclose(m.predict(tmp_path / "new.csv"), [r[0] for r in rows], rtol=1e-12)
    with pytest.raises(AttributeError):
        m.predict_proba(tmp_path / "new.csv")
    (tmp_path / "b").mkdir()
    b = bp.load(trained(tmp_path / "b", "binary"))
    header, rows = predicted(tmp_path / "b" / "m.pt", tmp_path / "b" / "new.csv")
    assert b.predict(tmp_path / "b" / "new.csv").tolist() == [r[:2] for r in rows]
    np.testing.assert_allclose(b.predict_proba(tmp_path / "b" / "new.csv"), [r[2:] for r in rows], rtol=1e-12)


def test_importing_the_package_and_the_api_stays_torch_free():
    code = ("import sys, backprop_cli as bp\nassert callable(bp.load)\nfrom backprop_cli import api\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_the_example_of_docs_export_prints_what_the_page_says(tmp_path, cli, monkeypatch):
    import re
    import shutil

    page = (ROOT / "docs" / "export.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    bash = next(b for lang, b in blocks if lang == "bash")
    code = next(b for lang, b in blocks if lang == "python")
    printed = next(b for lang, b in blocks if lang == "text")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for line in bash.splitlines():
        r = cli(*line.split()[1:])
        assert r.exit_code == 0, (line, r.output)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    number = r"-?\d+\.\d+"
    assert re.sub(number, "#", r.stdout) == re.sub(number, "#", printed)
    np.testing.assert_allclose([float(v) for v in re.findall(number, r.stdout)],
                               [float(v) for v in re.findall(number, printed)], atol=1e-4)


def test_api_bad_data_is_one_error_naming_it(tmp_path):
    import backprop_cli as bp
    from backprop_cli.errors import DataError

    m = bp.load(trained(tmp_path, "classes"))
    with pytest.raises(DataError, match=r"^data: --data: column 'size' is not in the header"):
        m.predict({"x1": [1.0], "x2": [2.0], "colour": ["red"], "flag": ["yes"]})
    with pytest.raises(DataError, match=r"^data: expected a path"):
        m.predict(42)
    with pytest.raises(DataError, match=r"column 'x1'"):
        m.predict({"x1": ["a"], "x2": [2.0], "colour": ["red"], "flag": ["yes"], "size": ["S"]})

"""`predict`'s output (issue 23, items 5, 8 and 11): read, predicted and written a batch at a time (CSV, JSON
as a streamed array, JSON Lines), memory flat in the row count, nothing written when a later row is bad;
CSV cells that are data, never terminal controls or spreadsheet formulas; output columns with distinct
names."""

import copy
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import ROOT, write
from test_evaluate_predict import trained  # noqa: F401  (the module's penguins run)
from test_validation import FEATURES

BASE = ["39.1,18.7,181,3750", "46.1,13.2,211,4500", "50.0,15.2,218,5700", "45.2,17.0,190,3500"]


def ids_csv(path, rows, header=None):
    """``rows`` penguin rows with an id (``r0`` …), the four features cycling through BASE."""
    with open(path, "w") as f:
        f.write(header or "id," + ",".join(FEATURES) + "\n")
        f.writelines(f"r{i},{BASE[i % 4]}\n" for i in range(rows))
    return path


def one_error(r, fragment=""):
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    return r.stderr


# ------------------------------------------------ item 5: streamed input and output

@pytest.fixture(scope="module")
def penguin_model(trained):  # noqa: F811
    from backprop_cli.runs.prediction import load_trained

    return load_trained(trained[1])


def test_a_streamed_read_gives_the_rows_of_the_whole_read(penguin_model, tmp_path):
    """Tiny batches through pyarrow's streaming CSV reader and Parquet row groups: the same predictions, in
    the same order, as the file read whole by the exact reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backprop_cli.runs.prediction import predict_stream

    data = ids_csv(tmp_path / "in.csv", 1000)
    whole_header, whole = predict_stream(penguin_model, data, "id", stream=False)
    want = [list(row) for columns in whole for row in zip(*columns)]
    assert len(want) == 1000 and want[999][0] == "r999"
    header, batches = predict_stream(penguin_model, data, "id", stream=True, batch_rows=64)
    import backprop_cli.data.batched as batched

    from backprop_cli.data.readers import source_of

    got = list(batched.raw_batches(source_of(data, "--data"), numbers=FEATURES, texts=[], keep="id",
                                   stream=True, block_bytes=4096))
    assert len(got) > 3 and sum(r.rows for r in got) == 1000  # many batches of the file, not one
    assert header == whole_header and [list(row) for b in batches for row in zip(*b)] == want
    table = pa.table({"id": [f"r{i}" for i in range(1000)], **{
        f: [float(BASE[i % 4].split(",")[j]) for i in range(1000)] for j, f in enumerate(FEATURES)}})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=100)
    _, batches = predict_stream(penguin_model, tmp_path / "in.parquet", "id", batch_rows=128)
    parts = list(batches)
    assert len(parts) == 8 and [list(row) for b in parts for row in zip(*b)] == want


def test_a_bad_cell_in_a_later_batch_is_one_line_and_nothing_is_written(cli, trained, tmp_path):  # noqa: F811
    """A file over the fast reader's size (read by batches): a cell that is not a number near its end is the
    exact reader's line naming its line, with nothing on stdout and no --out file; a header with spaces after
    the commas (a common export) streams as it is."""
    _, ckpt, _ = trained
    rows = 45_000
    data = ids_csv(tmp_path / "big.csv", rows)
    assert data.stat().st_size > 1 << 20
    text = data.read_text().splitlines()
    text[rows - 5] = f"r{rows - 6},oops,18.7,181,3750"  # line rows - 4 (the header is line 1)
    bad = write(tmp_path / "bad.csv", "\n".join(text) + "\n")
    for fmt in ("csv", "json", "jsonl"):
        r = cli("predict", "--checkpoint", ckpt, "--data", bad, "--format", fmt)
        one_error(r, f"bad.csv:{rows - 4}: column 'bill_length_mm': not a number (got 'oops')")
        assert r.stdout == ""
        r = cli("predict", "--checkpoint", ckpt, "--data", bad, "--format", fmt, "--out", tmp_path / f"p.{fmt}")
        one_error(r, f"bad.csv:{rows - 4}: column 'bill_length_mm': not a number (got 'oops')")
        assert not (tmp_path / f"p.{fmt}").exists()
    spaced = ids_csv(tmp_path / "spaced.csv", rows, "id, " + ", ".join(FEATURES) + "\n")
    r = cli("predict", "--checkpoint", ckpt, "--data", spaced, "--keep", "id", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == rows and json.loads(lines[-1])["id"] == f"r{rows - 1}"
    csv_rows = list(csv.DictReader(io.StringIO(cli("predict", "--checkpoint", ckpt, "--data", data, "--keep",
                                                   "id").stdout)))
    doc = json.loads(cli("predict", "--checkpoint", ckpt, "--data", data, "--keep", "id", "--format", "json").stdout)
    assert len(csv_rows) == len(doc["predictions"]) == rows
    for a, b, c in zip(csv_rows[::997], doc["predictions"][::997], map(json.loads, lines[::997])):
        assert a["id"] == b["id"] == c["id"] and a["prediction"] == b["prediction"] == c["prediction"]
        assert float(a["p_Adelie"]) == pytest.approx(b["p_Adelie"], rel=1e-6) and b == c


_PEAK = """
import json, resource, sys
from typer.testing import CliRunner
from backprop_cli.cli.app import app
ckpt, out, *files = sys.argv[1:]
for f in files:
    r = CliRunner().invoke(app, ["predict", "--checkpoint", ckpt, "--data", f, "--keep", "id", "--format", "jsonl",
                                 "--out", out])
    assert r.exit_code == 0, r.output
    print(json.dumps([f, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]), flush=True)
"""


def test_predict_memory_does_not_grow_with_the_rows(trained, tmp_path):  # noqa: F811
    """One new process predicts 20,000 rows, then 200,000 (JSON Lines, --keep id): the peak RSS grows by less
    than 60 MiB, what a batch costs, where holding the rows took ~2.4 kB each (430 MB more for these)."""
    _, ckpt, _ = trained
    small, large = ids_csv(tmp_path / "s.csv", 20_000), ids_csv(tmp_path / "l.csv", 200_000)
    r = subprocess.run([sys.executable, "-c", _PEAK, str(ckpt), str(tmp_path / "p.jsonl"), str(small), str(large)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    peaks = dict(json.loads(line) for line in r.stdout.splitlines())
    with open(tmp_path / "p.jsonl") as f:
        n = sum(1 for _ in f)
    assert n == 200_000
    grown = (peaks[str(large)] - peaks[str(small)]) / 1024
    print(f"peak RSS growth for 10x the rows: {grown:.1f} MiB")
    assert grown < 60, peaks


def test_out_of_memory_in_predict_has_no_training_hint(cli, trained, tmp_path, monkeypatch):  # noqa: F811
    import backprop_cli.runs.prediction as prediction

    def no_memory(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(prediction, "outputs", no_memory)
    _, ckpt, _ = trained
    err = one_error(cli("predict", "--checkpoint", ckpt, "--data", ids_csv(tmp_path / "in.csv", 10)),
                    "out of memory; predict holds the model and 65,536 rows at a time")
    assert "hidden_size" not in err and "batch_size" not in err
    assert cli("predict", "--checkpoint", ckpt, "--data", tmp_path / "in.csv", "--out", tmp_path / "p.csv").exit_code \
        == 2 and not (tmp_path / "p.csv").exists()


# ------------------------------------------------ item 8: CSV cells are data

HOSTILE = ["\x1b[2JAdelie", "=cmd|' /C calc'!A0", "Gen\ntoo"]


def test_class_names_with_control_characters_or_formulas_are_written_safely(cli, trained, tmp_path):  # noqa: F811
    _, ckpt, _ = trained
    state = copy.deepcopy(torch.load(ckpt, weights_only=True))
    state["data"]["classes"] = HOSTILE
    torch.save(state, tmp_path / "x.pt")
    data = write(tmp_path / "in.csv", "id," + ",".join(FEATURES) + "\n-5,39.1,18.7,181,3750\n@id,46.1,13.2,211,"
                 "4500\n+3,50.0,15.2,218,5700\n")
    r = cli("predict", "--checkpoint", tmp_path / "x.pt", "--data", data, "--keep", "id")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and len(r.stdout.splitlines()) == 4  # one line per record
    got = list(csv.reader(io.StringIO(r.stdout)))
    assert got[0] == ["id", "prediction", "p_\\x1b[2JAdelie", "p_=cmd|' /C calc'!A0", "p_Gen\\ntoo"]
    assert [row[0] for row in got[1:]] == ["-5", "'@id", "+3"]  # a number stays; a formula gets a quote
    assert all(row[1] in {"\\x1b[2JAdelie", "'=cmd|' /C calc'!A0", "Gen\\ntoo"} for row in got[1:])
    doc = json.loads(cli("predict", "--checkpoint", tmp_path / "x.pt", "--data", data, "--format", "json").stdout)
    assert doc["columns"][1:] == [f"p_{c}" for c in HOSTILE]  # JSON keeps the names as they are


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_is_one_printable_cell_and_no_formula(text):
    from backprop_cli.render.predictions import csv_text, escaped, predictions_text

    out = escaped(text)
    assert out.isprintable() and (out == text) == text.isprintable()
    cell = csv_text(text)
    assert cell.isprintable()
    if cell.startswith(("=", "+", "-", "@")):
        float(cell)  # only a number may start like a formula
    written = predictions_text(["c"], [[text]], "csv")
    assert written.count("\n") == 2 and list(csv.reader(io.StringIO(written)))[1] == [cell]  # one record, one line


# ------------------------------------------------ item 11: distinct output names, or one line before any work

@pytest.mark.parametrize("keep, column, message", [
    ("", None, "error: --keep: expected a column name (got '')\n"),
    ("prediction", "prediction", "error: --keep 'prediction': the predictions would have two columns named "
     "'prediction' (columns: 'prediction', 'prediction', 'p_Adelie', 'p_Chinstrap', 'p_Gentoo'); keep another "
     "column\n"),
    ("p_Gentoo", "p_Gentoo", "error: --keep 'p_Gentoo': the predictions would have two columns named 'p_Gentoo'"),
])
@pytest.mark.parametrize("format", ["csv", "json"])
def test_keep_is_a_name_the_output_does_not_have(cli, trained, tmp_path, keep, column, message, format):  # noqa: F811
    _, ckpt, _ = trained
    data = write(tmp_path / "rows.csv", "species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\n")
    if column is not None:
        data.write_text(data.read_text().replace("species,", f"{column},", 1))
    r = cli("predict", "--checkpoint", ckpt, "--data", data, "--keep", keep, "--format", format,
            "--out", tmp_path / f"p.{format}")
    assert r.exit_code == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.output
    assert not (tmp_path / f"p.{format}").exists()
    if column is None:
        r = cli("predict", "--checkpoint", ckpt, "--data", data, "--keep", "species", "--format", "json")
        assert r.exit_code == 0 and json.loads(r.stdout)["predictions"][0]["species"] == "Adelie", r.output


@settings(max_examples=200, deadline=None)
@given(classes=st.lists(st.text(max_size=4), min_size=2, max_size=4, unique=True),
       targets=st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True),
       keep=st.none() | st.text(max_size=6) | st.sampled_from(["prediction", "p_", "p_a"]),
       loss=st.sampled_from(["cross_entropy", "bce_with_logits", "mse"]))
@example(classes=["", "0"], targets=["\n"], keep="\n", loss="bce_with_logits")  # names shown quoted, one line
def test_predict_columns_are_distinct_or_refused(classes, targets, keep, loss):
    """Whatever the class or target names and --keep: the output's columns are distinct names (a JSON object
    keeps every one), or one ConfigError line."""
    from types import SimpleNamespace

    from backprop_cli.errors import ConfigError
    from backprop_cli.runs.prediction import prediction_columns

    model = SimpleNamespace(loss_name=loss, classes=classes, targets=targets)
    try:
        header = prediction_columns(model, keep)
    except ConfigError as e:
        assert "\n" not in str(e) and (keep == "" or "two columns named" in str(e))
        return
    assert len(set(header)) == len(header) and (keep is None or header[0] == keep)
    assert np.all([isinstance(h, str) for h in header])

"""Class labels as written, missing cells, the validation split, standardization, and both CSV readers."""

import functools
import os
import textwrap

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from backprop_cli.data.load import read_table
from backprop_cli.data.readers import Text, read_raw, source_of
from backprop_cli.data.split import split_rows
from backprop_cli.errors import DataError
from conftest import csv_config as setup




@pytest.fixture(params=["exact", "pyarrow"])
def reader(request, monkeypatch):
    """Run the test with each CSV reader: the exact one (small files) and pyarrow (large files)."""
    monkeypatch.setattr("backprop_cli.data.readers.FAST_READER_BYTES", 0 if request.param == "pyarrow" else 1 << 40)
    return request.param


def test_text_labels_are_sorted_distinct_values(tmp_path, reader):
    text = "a,b,y\n1,2,setosa\n3,4,virginica\n5,6, setosa\n7,8,versicolor\n"
    t = read_table(setup(tmp_path, text, loss="cross_entropy", sizes=(2, 4, 3)))
    assert t.classes == ["setosa", "versicolor", "virginica"]
    assert t.y.dtype == np.int64 and t.y.tolist() == [0, 2, 0, 1]
    assert t.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_integer_labels_keep_their_values_as_names(tmp_path, reader):
    text = "a,b,y\n1,2,3\n3,4,1\n5,6,2\n7,8,1.0\n9,9,10\n"
    t = read_table(setup(tmp_path, text, loss="cross_entropy", sizes=(2, 4, 4)))
    assert t.classes == ["1", "2", "3", "10"]  # by value, not as text; 1.0 is the class 1
    assert t.y.tolist() == [2, 0, 1, 0, 3]


def test_a_huge_numeric_label_is_just_a_class(tmp_path, reader):
    t = read_table(setup(tmp_path, "a,b,y\n1,2,1e20\n3,4,-5\n", loss="cross_entropy", sizes=(2, 4, 2), batch=1))
    assert t.classes == ["-5", "100000000000000000000"] and t.y.tolist() == [1, 0]


def test_missing_cells_error_names_line_or_drop_rows(tmp_path, reader):
    text = "a,b,y\n1,2,x\n3,NA,y\n\n5,6,\n7,8,z\n9,10,x\n"
    with pytest.raises(DataError, match=r"d.csv:3: column 'b': missing value; set data.columns.b.missing"):
        read_table(setup(tmp_path, text, ", missing: error", loss="cross_entropy", sizes=(2, 4, 3)))
    t = read_table(setup(tmp_path, text, ", missing: drop_rows", loss="cross_entropy", sizes=(2, 4, 2)))
    assert t.dropped == 2 and t.dropped_target == 1 and t.x.tolist() == [[1, 2], [7, 8], [9, 10]]
    assert t.classes == ["x", "z"] and t.y.tolist() == [0, 1, 0]


def _texts(col):
    return [col.values[c] if c >= 0 else None for c in col.codes]


def test_readers_agree_on_a_mixed_file(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["\ufeffid,f1,f2,f3,label"]
    for i in range(500):
        a, b, c = rng.standard_normal(3)
        f2 = "NA" if i % 37 == 0 else f"{b:.6g}"
        lines.append(f"r{i},{a:.6g}, {f2} ,\"{c:.3e}\",{['cat', 'dog', 'emu', ''][i % 4]}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    src = source_of(tmp_path / "m.csv")
    out = {fast: read_raw(src, numbers=["f1", "f3"], infer=["f2"], texts=["label"], keep="id", fast=fast)
           for fast in (False, True)}
    a, b = out[False], out[True]
    for name in ("f1", "f2", "f3"):
        assert np.array_equal(a.columns[name], b.columns[name], equal_nan=True)
    assert int(np.isnan(a.columns["f2"]).sum()) == 14
    assert _texts(a.columns["label"]) == _texts(b.columns["label"]) == [["cat", "dog", "emu", None][i % 4]
                                                                        for i in range(500)]
    assert a.kept == b.kept and a.kept[:2] == ["r0", "r1"]


def test_pyarrow_reads_many_record_batches_into_place(tmp_path, monkeypatch):
    """A 3 MB file reaches pyarrow's reader as several record batches. The oracle: the cells as written,
    parsed by Python's float, a missing number NaN and a label written ' NA ' missing. The exact reader must not
    be needed here; read by itself, it gives the same."""
    rng = np.random.default_rng(2)
    n = 60_000
    cells = [[f"{v:.7g}" for v in row] for row in rng.standard_normal((n, 4))]
    names = rng.choice(["cat", "dog", "emu"], n)
    lines = ["id,a,b,c,t,label"]
    want_labels = []
    for i, (a, b, c, t) in enumerate(cells):
        label = names[i]
        if i % 997 == 3:
            cells[i][1] = b = "NA"
        if i % 1231 == 5:
            label = " NA "
        want_labels.append(None if label == " NA " else str(label))
        lines.append(f"{i},{a},{b},{c},{t},{label}")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    import pyarrow.csv

    assert len(pyarrow.csv.read_csv(path).to_batches()) >= 2

    import backprop_cli.data.readers as data

    exact = data._read_exact

    def no_exact(*args):
        raise AssertionError("the exact reader was needed")

    src = source_of(path)
    monkeypatch.setattr(data, "_read_exact", no_exact)
    fast = read_raw(src, numbers=["a", "b", "c", "t"], texts=["label"], keep="id", fast=True)
    monkeypatch.setattr(data, "_read_exact", exact)
    slow = read_raw(src, numbers=["a", "b", "c", "t"], texts=["label"], keep="id", fast=False)
    want = np.array([[float(v) if v != "NA" else np.nan for v in row] for row in cells], dtype=np.float32)
    for cols in (fast, slow):
        for j, name in enumerate("abct"):
            assert np.array_equal(cols.columns[name], want[:, j], equal_nan=True)
        assert _texts(cols.columns["label"]) == want_labels and cols.kept == [str(i) for i in range(n)]


def _big_csv(path, n=60_000, blank_every=9_973):
    """A CSV of n rows (a few MB: many of pyarrow's record batches) with a blank line now and then; returns
    its lines (a new list, to change) and the line number of each data row."""
    lines, line_of = _big_lines(n, blank_every)
    path.write_text("\n".join(lines) + "\n")
    return list(lines), line_of


@functools.cache
def _big_lines(n, blank_every):
    """The lines of _big_csv, made once per process (the same seeded rows for the 16 tests that use them)."""
    rng = np.random.default_rng(4)
    lines, line_of = ["a,b,c,label"], []
    for i, (a, b, c) in enumerate(rng.standard_normal((n, 3))):
        if i % blank_every == 17:
            lines.append("")
        lines.append(f"{a:.6g},{b:.6g},{c:.6g},{['cat', 'dog'][i % 2]}")
        line_of.append(len(lines))
    return tuple(lines), tuple(line_of)


@pytest.mark.parametrize("cell, column, expect", [
    ("x", "b", "column 'b': not a number (got 'x')"),
    ("1,2", "row", "row has 2 cells, the header has 4"),
    ("inf", "c", "column 'c': not a finite number (got 'inf')"),
    ("3.4e39", "a", "column 'a': 3.4e39 is beyond float32's range"),
])
@pytest.mark.parametrize("at", [5, 45_000])
def test_a_refused_large_file_names_the_same_line_as_the_exact_reader(tmp_path, cell, column, expect, at):
    """After pyarrow refuses a file, the exact reader names the problem: the same message as the exact reader
    alone, the right line across blank lines."""
    path = tmp_path / "big.csv"
    lines, line_of = _big_csv(path)
    cells = lines[line_of[at] - 1].split(",")
    if column == "row":
        cells = cell.split(",")
    else:
        cells[["a", "b", "c", "label"].index(column)] = cell
    lines[line_of[at] - 1] = ",".join(cells)
    lines[line_of[at + 100] - 1] = "later,1,2,cat"  # a later problem is not the one named
    path.write_text("\n".join(lines) + "\n")
    messages = []
    for fast in (False, True):
        with pytest.raises(DataError) as e:
            read_raw(source_of(path), numbers=["a", "b", "c"], texts=["label"], fast=fast)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and messages[1].startswith(f"{path}:{line_of[at]}: {expect}")


def test_cells_only_the_exact_reader_accepts_fall_back_to_it(tmp_path):
    """' NA ' (with spaces) in a number column: pyarrow refuses it, the exact reader reads it as missing."""
    path = tmp_path / "big.csv"
    lines, line_of = _big_csv(path)
    for at in (3, 50_000):
        lines[line_of[at] - 1] = "1, NA ,2,cat"
    path.write_text("\n".join(lines) + "\n")
    raw = read_raw(source_of(path), numbers=["a", "b", "c"], texts=["label"], fast=True)
    assert raw.rows == 60_000 and int(np.isnan(raw.columns["b"]).sum()) == 2


def test_survey_agrees_across_readers(tmp_path, monkeypatch):
    """init --csv's survey: each column's type, distinct and missing counts, ids; pyarrow (a file in several
    record batches) and the exact reader against counts made here."""
    from backprop_cli.data.survey import survey

    rng = np.random.default_rng(3)
    n = 50_000
    lines = ["a,b,name,c,label"]
    for i, (a, c) in enumerate(rng.standard_normal((n, 2))):
        lines.append(f"{'NA' if i % 101 == 0 else f'{a:.6g}'},{i % 7},{'x' if i % 3 else 'y'}{i},"
                     f"{'' if i % 103 == 0 else f'{c:.6g}'},{['cat', 'dog'][i % 2]}")
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    for fast in (True, False):
        monkeypatch.setattr("backprop_cli.data.readers.FAST_READER_BYTES", 0 if fast else 1 << 40)
        s = survey(source_of(tmp_path / "s.csv"))
        c = s.columns
        assert s.rows == n and [c[k].kind for k in s.header] == ["number", "number", "category", "number", "binary"]
        assert c["a"].missing == len(range(0, n, 101)) and c["b"].missing == 0 and c["c"].missing == len(range(0, n, 103))
        assert c["b"].distinct == 7 and c["b"].integers and not c["b"].id_like
        assert c["name"].id_like and c["label"].values == ["cat", "dog"], fast


def test_split_is_seeded_stratified_and_the_size_of_each_class():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rows = split_rows(100, 0.2, seed=7, strata=y)
    assert np.array_equal(rows, split_rows(100, 0.2, seed=7, strata=y))  # seeded
    assert not np.array_equal(rows, split_rows(100, 0.2, seed=8, strata=y))
    assert [int((y[rows] == k).sum()) for k in range(3)] == [10, 6, 4]  # round(0.2 × each class)
    assert len(split_rows(101, 0.3, seed=0)) == 30 and len(set(split_rows(101, 0.3, seed=0))) == 30


def test_validation_fraction_holds_rows_out_and_standardizes_on_training_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{a:.5f},{100 + 50 * b:.5f},{7},{c:.5f}" for a, b, c in rng.standard_normal((40, 3))]
    text = "a,b,k,y\n" + "\n".join(rows) + "\n"
    plain = read_table(setup(tmp_path, text, sizes=(3, 4, 1), batch=4))
    cfg = setup(tmp_path, text, ", validation: 0.25, standardize: true, standardize_target: true",
                sizes=(3, 4, 1), batch=4)
    t = read_table(cfg)
    held = split_rows(40, 0.25, seed=0)
    train = np.setdiff1d(np.arange(40), held)
    assert t.samples == 30 and t.val_samples == 10 and t.split["validation_rows"] == 10
    raw_x, raw_y = plain.x.astype(np.float64), plain.y.astype(np.float64)
    mean, std = raw_x[train].mean(axis=0), raw_x[train].std(axis=0)
    std[2] = 1.0  # the constant column k is centred, not divided
    np.testing.assert_allclose(t.x, (raw_x[train] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(t.val_x, (raw_x[held] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(t.y, (raw_y[train] - raw_y[train].mean()) / raw_y[train].std(), atol=1e-5)
    np.testing.assert_allclose(t.raw_std, raw_x[train].std(axis=0), rtol=1e-5)
    assert t.x_scaling.std[2] == 1.0 and abs(t.x_scaling.mean[2] - 7) < 1e-9
    again = read_table(cfg)
    assert np.array_equal(again.val_x, t.val_x) and again.split == t.split  # depends only on seed and data


def test_validation_file_must_have_the_same_columns_and_classes(tmp_path):
    train = "a,b,y\n1,2,x\n3,4,y\n5,6,x\n"
    (tmp_path / "v.csv").write_text("a,b,y\n1,1,y\n2,2,x\n")
    t = read_table(setup(tmp_path, train, ", validation: v.csv", loss="cross_entropy", sizes=(2, 4, 2)))
    assert t.val_y.tolist() == [1, 0] and t.val_x.tolist() == [[1, 1], [2, 2]] and t.split["validation"] == "file"
    (tmp_path / "v.csv").write_text("a,c,y\n1,1,y\n")
    with pytest.raises(DataError, match=r"v.csv: data.validation: column 'b' is not in the header"):
        read_table(setup(tmp_path, train, ", validation: v.csv", loss="cross_entropy", sizes=(2, 4, 2)))
    (tmp_path / "v.csv").write_text("a,b,y\n1,1,y\n2,2,zebra\n")
    with pytest.raises(DataError, match=r"v.csv:3: column 'y': class 'zebra' is not one the model was trained on"):
        read_table(setup(tmp_path, train, ", validation: v.csv", loss="cross_entropy", sizes=(2, 4, 2)))


@pytest.mark.parametrize("extra,message", [
    (", validation: 0.01", "0.01 of 6 rows leaves no validation rows"),
    (", validation: 0.5", r"data.batch_size \(4\) is larger than the 3 training rows after holding out 3"),
])
def test_bad_validation_fractions(tmp_path, extra, message):
    text = "a,b,y\n" + "".join(f"{i},{i},{i}\n" for i in range(6))
    with pytest.raises(DataError, match=message):
        read_table(setup(tmp_path, text, extra, batch=4))


@pytest.mark.parametrize("kind", ["dir", "fifo", "loop", "dangling"])
def test_data_path_must_be_a_regular_file(tmp_path, kind):
    cfg = setup(tmp_path, "a,b,y\n1,2,3\n")
    target = tmp_path / "d.csv"
    target.unlink()
    if kind == "dir":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "loop":
        os.symlink(tmp_path / "d.csv", target)
    else:
        os.symlink(tmp_path / "gone.csv", target)
    with pytest.raises(DataError) as e:
        read_table(cfg)
    text = str(e.value)
    assert "d.csv" in text and "(data.path)" in text and "\n" not in text
    assert {"dir": "directory", "fifo": "FIFO", "loop": "symlink loop", "dangling": "gone.csv"}[kind] in text


def test_reading_a_large_csv_stays_within_a_fixed_multiple_of_the_file(tmp_path):
    """Issue: 5M rows once peaked at 22-28× the file. The pyarrow path stays near the file's size."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write(",".join([f"f{i}" for i in range(10)] + ["y"]) + "\n")
        np.savetxt(f, rng.standard_normal((200_000, 11)).astype(np.float32), fmt="%.6g", delimiter=",")
    size = path.stat().st_size
    code = textwrap.dedent(f"""
        import resource, numpy, pyarrow.csv
        from pathlib import Path
        from backprop_cli.data.readers import read_raw, source_of
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        base = rss()
        open("/proc/self/clear_refs", "w").write("5")
        cols = read_raw(source_of(Path({str(path)!r})), numbers=[f"f{{i}}" for i in range(10)] + ["y"])
        peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
        print(peak - base, sum(c.nbytes for c in cols.columns.values()))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ},
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr
    grew, result = map(int, r.stdout.split())
    assert result == 200_000 * 11 * 4
    # file 20 MB; pyarrow holds about 50 MiB of its own (thread pools, allocator) whatever the size; the old
    # reader grew by about 25× the file
    assert grew < 2 * size + 64 * 2**20, (grew, size)


def test_dev_zero_is_refused_as_data_and_by_init(tmp_path, cli):
    cfg = setup(tmp_path, "a,b,y\n1,2,3\n")
    (tmp_path / "d.csv").unlink()
    os.symlink("/dev/zero", tmp_path / "d.csv")
    with pytest.raises(DataError, match="is a character device, not a regular file"):
        read_table(cfg)
    r = cli("init", tmp_path / "x.yaml", "--csv", "/dev/zero")
    assert r.exit_code == 2 and "character device" in r.stderr and not (tmp_path / "x.yaml").exists()


# ---------------------------------- scaling at float32's extremes (issue 23, item 9)

@pytest.mark.filterwarnings("error::RuntimeWarning")  # a numpy overflow warning is a finding too
def test_float32_data_of_the_extremes_are_scaled_in_float64(tmp_path, cli, reader):
    """standardize on finite float32 data of ±3.4e38: v − mean overflows float32, not float64. The scaled
    values are the float64 formula's on the float32 values (computed here), the run trains (exit 0, not 3)
    and evaluate reads its checkpoint back."""
    rng = np.random.default_rng(0)
    a = rng.choice([3.4e38, -3.4e38, 1.0], size=60)
    b, y = rng.random(60), rng.random(60)
    text = "a,b,y\n" + "".join(f"{p!r},{q!r},{t!r}\n" for p, q, t in zip(a.tolist(), b.tolist(), y.tolist()))
    cfg = setup(tmp_path, text, data_extra=", standardize: true", batch=10)
    t = read_table(cfg)
    a32 = a.astype(np.float32).astype(np.float64)
    mean, std = a32.mean(), a32.std()
    assert np.isfinite(t.x).all() and t.x.dtype == np.float32
    np.testing.assert_allclose(t.x[:, 0], ((a32 - mean) / std).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(t.x_scaling.mean[0], mean, rtol=1e-12)
    np.testing.assert_allclose(t.x_scaling.std[0], std, rtol=1e-12)
    r = cli("train", "-c", tmp_path / "c.yaml", "--steps", 3, "--save", tmp_path / "c.pt", "-q")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", "--checkpoint", tmp_path / "c.pt", "--data", tmp_path / "d.csv")
    assert r.exit_code == 0 and "Warning" not in r.output, r.output


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_std_below_float32s_smallest_normal_counts_as_a_constant_column(tmp_path, cli):
    """Subnormal float32 data (1e-40 … 3e-40): their std is no number a checkpoint may hold (float32 keeps
    few digits there), so the column is centred, not divided, and the run's own checkpoint loads."""
    text = "a,b,y\n" + "".join(f"{v},{i},{i % 3}\n" for i, v in enumerate(["1e-40", "2e-40", "3e-40"] * 4))
    setup(tmp_path, text, data_extra=", standardize: true", batch=4)
    t = read_table(setup(tmp_path, text, data_extra=", standardize: true", batch=4))
    assert t.x_scaling.std[0] == 1.0 and 0 < t.x_scaling.mean[0] < 1e-39 and t.x_scaling.std[1] > 1
    assert abs(t.x[:, 0]).max() < 1e-39
    assert cli("train", "-c", tmp_path / "c.yaml", "--steps", 2, "--save", tmp_path / "c.pt", "-q").exit_code == 0
    r = cli("evaluate", "--checkpoint", tmp_path / "c.pt", "--data", tmp_path / "d.csv")
    assert r.exit_code == 0, r.output


def test_validation_rows_that_scale_beyond_float32_name_their_file_and_column(tmp_path, cli):
    """The statistics come from the training rows; a validation row far outside them can leave float32 once
    scaled: one line naming the validation file and the column (exit 2), never a run that fails at step 1."""
    text = "a,b,y\n" + "".join(f"{1 + i % 2 * 1e-6!r},{i},{i % 3}\n" for i in range(12))
    setup(tmp_path, text, data_extra=", standardize: true, validation: v.csv", batch=4)
    (tmp_path / "v.csv").write_text("a,b,y\n3e38,1,0\n1,2,1\n")
    r = cli("train", "-c", tmp_path / "c.yaml", "--steps", 2, "-q")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert r.stderr.startswith("error: ") and "v.csv: column 'a': a value is not finite in float32 once scaled " \
        "(got 3.00000001e+38, mean 1.00000048, std 4.76837158e-07)" in r.stderr, r.stderr


_F32 = float(np.finfo(np.float32).max)
FLOAT32S = st.floats(width=32, allow_nan=False, allow_infinity=False) | st.sampled_from([_F32, -_F32, 1e-45, 3.4e38])


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_scaling_any_float32_data_is_the_float64_formula_or_one_line(data):
    """Any finite float32 data under any statistics a checkpoint may hold (float32's range, std from its
    smallest normal number): the scaled values are (v − mean) / std computed in float64 (the oracle here),
    stored as float32, or one DataError naming the file and the column whose value leaves float32. Never a
    numpy warning, never a non-finite value left in the data."""
    from backprop_cli.data.split import scaling_of
    from backprop_cli.data.tables import Scaling

    cols = data.draw(st.integers(1, 3), label="columns")
    rows = data.draw(st.lists(st.lists(FLOAT32S, min_size=cols, max_size=cols), min_size=1, max_size=6), label="rows")
    a = np.array(rows, dtype=np.float32)
    if data.draw(st.booleans(), label="own statistics"):
        sc, _ = scaling_of(a)  # what training computes: always within the bounds the checks hold
        assert all(abs(m) <= _F32 for m in sc.mean) and all(1.1754943508222875e-38 <= s <= _F32 for s in sc.std)
    else:
        stat = st.floats(-_F32, _F32)
        sc = Scaling(data.draw(st.lists(stat, min_size=cols, max_size=cols), label="mean"),
                     data.draw(st.lists(st.floats(1.1754943508222875e-38, _F32), min_size=cols, max_size=cols),
                               label="std"))
    with np.errstate(over="ignore"):
        want = ((a.astype(np.float64) - np.array(sc.mean)) / np.array(sc.std)).astype(np.float32)
    names = [f"c{i}" for i in range(cols)]
    got = a.copy()
    try:
        sc.apply(got, names, "d.csv")
    except DataError as e:
        bad = int(np.argwhere(~np.isfinite(want))[0][1])
        assert str(e).startswith(f"d.csv: column 'c{bad}': a value is not finite in float32 once scaled"), str(e)
        event("refused")
        return
    event("scaled")
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)

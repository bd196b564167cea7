"""Class labels as written, missing cells, the validation split, standardization, and both CSV readers."""

import functools
import os
import textwrap

import numpy as np
import pytest

from backprop_cli.data.readers import read_columns, read_table, split_rows
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
    with pytest.raises(DataError, match=r"d.csv:3: column 'b': missing value \(got 'NA'\); set data.missing: "
                                        "drop_rows"):
        read_table(setup(tmp_path, text, loss="cross_entropy", sizes=(2, 4, 3)))
    t = read_table(setup(tmp_path, text, ", missing: drop_rows", loss="cross_entropy", sizes=(2, 4, 2)))
    assert t.dropped == 2 and t.x.tolist() == [[1, 2], [7, 8], [9, 10]] and t.classes == ["x", "z"]
    assert t.y.tolist() == [0, 1, 0]


def test_readers_agree_on_a_mixed_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    lines = ["\ufeffid,f1,f2,f3,label"]
    for i in range(500):
        a, b, c = rng.standard_normal(3)
        f2 = "NA" if i % 37 == 0 else f"{b:.6g}"
        lines.append(f"r{i},{a:.6g}, {f2} ,\"{c:.3e}\",{['cat', 'dog', 'emu'][i % 3]}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    out = {}
    for fast in (False, True):
        out[fast] = read_columns(tmp_path / "m.csv", key="data.path", numeric=["f1", "f2", "f3"], label="label",
                                 keep="id", missing="drop_rows", fast=fast)
    a, b = out[False], out[True]
    assert a.dropped == b.dropped == 14
    assert np.array_equal(a.numbers, b.numbers)
    assert [a.label_values[i] for i in a.labels] == [b.label_values[i] for i in b.labels]
    assert a.kept == b.kept and a.kept[:2] == ["r1", "r2"]



@pytest.mark.parametrize("missing", ["error", "drop_rows"])
def test_pyarrow_reads_many_record_batches_into_place(tmp_path, monkeypatch, missing):
    """A 3 MB file reaches pyarrow's reader as several record batches, copied block by block into the
    feature and target arrays. The oracle: the cells as written, parsed by Python's float, the rows with a
    missing number or a label written ' NA ' left out. The exact reader must not be needed here; read by
    itself, it gives the same."""
    rng = np.random.default_rng(2)
    n = 60_000
    cells = [[f"{v:.7g}" for v in row] for row in rng.standard_normal((n, 4))]
    names = rng.choice(["cat", "dog", "emu"], n)
    lines = ["id,a,b,c,t,label"]
    gone = []
    for i, (a, b, c, t) in enumerate(cells):
        label = names[i]
        if missing == "drop_rows" and i % 997 == 3:
            b = "NA"
        if missing == "drop_rows" and i % 1231 == 5:
            label = " NA "
        gone.append(b == "NA" or label == " NA ")
        lines.append(f"{i},{a},{b},{c},{t},{label}")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    import pyarrow.csv

    assert len(pyarrow.csv.read_csv(path).to_batches()) >= 2

    import backprop_cli.data.readers as data

    exact = data._read_exact

    def no_exact(*args):
        raise AssertionError("the exact reader was needed")

    monkeypatch.setattr(data, "_read_exact", no_exact)
    fast = read_columns(path, key="data.path", numeric=["a", "b", "c"], targets=["t"], label="label", keep="id",
                        missing=missing, fast=True)
    monkeypatch.setattr(data, "_read_exact", exact)
    monkeypatch.setattr(data, "EXACT_BLOCK_ROWS", 7_000)  # the exact reader's float32 blocks, across their ends
    slow = read_columns(path, key="data.path", numeric=["a", "b", "c"], targets=["t"], label="label", keep="id",
                        missing=missing, fast=False)
    kept = [i for i in range(n) if not gone[i]]
    want = np.array([[float(v) for v in cells[i]] for i in kept], dtype=np.float32)
    for cols in (fast, slow):
        assert cols.dropped == n - len(kept) == (110 if missing == "drop_rows" else 0)
        assert cols.numbers.flags.c_contiguous and cols.targets.flags.c_contiguous
        assert np.array_equal(cols.numbers, want[:, :3]) and np.array_equal(cols.targets, want[:, 3:])
        assert [cols.label_values[k] for k in cols.labels] == [str(names[i]) for i in kept]
        assert sorted(cols.label_values) == ["cat", "dog", "emu"] and cols.kept == [str(i) for i in kept]




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
    ("", "b", "column 'b': missing value (got '')"),
    (" NA ", "label", "column 'label': missing value (got 'NA')"),
    ("nan", "a", "column 'a': missing value (got 'nan')"),
])
@pytest.mark.parametrize("at", [5, 45_000])
def test_a_refused_large_file_names_the_same_line_as_the_exact_reader(tmp_path, monkeypatch, cell, column, expect,
                                                                     at):
    """After pyarrow refuses a file, a streaming pass finds the record batch and the exact reader checks from
    there: the same message as the exact reader alone, the right line across blank lines, and (for a
    problem deep in the file) the rows before it are not checked twice."""
    import backprop_cli.data.readers as data

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
    starts = []
    exact = data._read_exact

    def spy(*args, start=0):
        starts.append(start)
        return exact(*args, start=start)

    monkeypatch.setattr(data, "_read_exact", spy)
    messages = []
    for fast in (False, True):
        with pytest.raises(DataError) as e:
            read_columns(path, key="data.path", numeric=["a", "b", "c"], label="label", fast=fast)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and messages[1].startswith(f"{path}:{line_of[at]}: {expect}")
    if at > 10_000:
        assert starts[1] > 10_000 and starts[1] <= at  # the located pass began in the batch of the problem


def test_cells_only_the_exact_reader_accepts_fall_back_to_it(tmp_path):
    """' NA ' (with spaces) in a number column: pyarrow refuses it, the exact reader drops the row; the
    located pass finds no error, so the whole file is read the exact way."""
    path = tmp_path / "big.csv"
    lines, line_of = _big_csv(path)
    for at in (3, 50_000):
        lines[line_of[at] - 1] = "1, NA ,2,cat"
    path.write_text("\n".join(lines) + "\n")
    cols = read_columns(path, key="data.path", numeric=["a", "b", "c"], label="label", missing="drop_rows",
                        fast=True)
    assert cols.dropped == 2 and cols.numbers.shape == (60_000 - 2, 3)


def test_survey_agrees_across_readers(tmp_path, monkeypatch):
    """init --csv's survey: which columns hold numbers, rows with missing cells, the distinct labels; pyarrow
    (a file in several record batches) and the exact reader against counts made here."""
    from backprop_cli.data.readers import survey

    rng = np.random.default_rng(3)
    n = 50_000
    lines = ["a,b,name,c,label"]
    for i, (a, c) in enumerate(rng.standard_normal((n, 2))):
        lines.append(f"{'NA' if i % 101 == 0 else f'{a:.6g}'},{i % 7},{'x' if i % 3 else 'y'}{i},"
                     f"{'' if i % 103 == 0 else f'{c:.6g}'},{['cat', 'dog'][i % 2]}")
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    either = {i for i in range(n) if i % 101 == 0 or i % 103 == 0}
    for fast in (True, False):
        monkeypatch.setattr("backprop_cli.data.readers.FAST_READER_BYTES", 0 if fast else 1 << 40)
        s = survey(tmp_path / "s.csv", lambda header: header.index("label"))
        assert s.rows == n and s.numeric == ["a", "b", "c"] and s.distinct == ["cat", "dog"]
        assert s.missing_by_row(["a"]) == len(range(0, n, 101)) and s.missing_by_row(["b"]) == 0
        assert s.missing_by_row(["a", "c"]) == len(either), fast


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
        from backprop_cli.data.readers import read_columns
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        base = rss()
        open("/proc/self/clear_refs", "w").write("5")
        cols = read_columns(Path({str(path)!r}), key="data.path", numeric=[f"f{{i}}" for i in range(10)] + ["y"])
        peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
        print(peak - base, cols.numbers.nbytes)
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

"""Real tables (issue 22): column types, one-hot and embedding encoding, missing-cell policies fitted on the
training rows only, Parquet/TSV/gzip/delimiters/decimal comma, and the bad inputs each refused in one line."""

import gzip
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backprop_cli.config import load_config
from backprop_cli.data.encoding import ColumnCode, Encoding, embedding_width
from backprop_cli.data.load import read_table
from backprop_cli.data.readers import RawTable, Source, Text
from backprop_cli.data.split import split_rows
from backprop_cli.errors import DataError
from conftest import CONFIGS, write

ROWS = [  # island, bill, sex, mass (target); empty cells and NA on purpose, a space before a value
    ("Biscoe", "39.1", "male", "3750"), ("Dream", "", "female", "3800"), ("Torgersen", "40.3", " female", "3250"),
    ("Biscoe", "36.7", "", "3450"), ("", "39.3", "male", "3650"), ("Dream", "38.9", "female", "3625"),
    ("Biscoe", "39.2", "male", "4675"), ("Dream", "NA", "female", ""), ("Torgersen", "34.1", "male", "3475"),
    ("Biscoe", "42.0", "female", "4250"), ("Dream", "37.8", "male", "3300"), ("Biscoe", "37.8", "female", "3700"),
]


def table_text(sep=",", decimal="."):
    lines = [sep.join(["island", "bill", "sex", "mass"])]
    for r in ROWS:
        lines.append(sep.join(c.replace(".", decimal) if decimal != "." else c for c in r))
    return "\n".join(lines) + "\n"


def config(tmp_path, data_file, extra="", loss="mse", out=1, name="c.yaml"):
    return write(tmp_path / name, textwrap.dedent(f"""\
        seed: 0
        model: {{input_size: auto, hidden_size: 4, output_size: {out}}}
        loss: {loss}
        optimizer: {{name: adam, lr: 0.01}}
        data: {{kind: csv, path: {data_file}, target: mass, batch_size: 4, standardize: true{extra}}}
        train: {{steps: 6}}
        """))


def test_one_hot_and_fill_values_against_numpy(tmp_path):
    """Encoded inputs against a formula made here: median of the training rows' bill, one-hot of the sorted
    islands with a <missing> level, binary sex (stripped: ' female' is female) filled with its mode."""
    write(tmp_path / "d.csv", table_text())
    t = read_table(load_config(config(tmp_path, "d.csv")))
    keep = [i for i, r in enumerate(ROWS) if r[3]]  # the row without a target is dropped
    assert t.dropped == t.dropped_target == 1 and t.samples == len(keep)
    bills = np.array([float(ROWS[i][1]) if ROWS[i][1] not in ("", "NA") else np.nan for i in keep])
    median = np.median(bills[~np.isnan(bills)])
    islands = ["Biscoe", "Dream", "Torgersen", "<missing>"]
    assert t.feature_names == [*(f"island={v}" for v in islands), "bill", "sex"]
    sexes = [ROWS[i][2].strip() for i in keep]
    present = [s for s in sexes if s]
    mode = max(sorted(set(present)), key=present.count)  # a tie goes to the first in sorted order
    want = np.zeros((len(keep), 6))
    for j, i in enumerate(keep):
        want[j, islands.index(ROWS[i][0] or "<missing>")] = 1
        want[j, 4] = bills[j] if not np.isnan(bills[j]) else median
        want[j, 5] = (sexes[j] or mode) == "male"  # male sorts after female: level 1
    mean, std = want[:, 4].mean(), want[:, 4].std()
    want[:, 4] = (want[:, 4] - mean) / std  # only the number is standardized
    np.testing.assert_allclose(t.x, want, rtol=1e-5, atol=1e-6)
    assert t.x_scaling.mean[:4] == [0, 0, 0, 0] and t.x_scaling.std[5] == 1.0


def test_statistics_come_from_the_training_rows_only(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    v = rng.standard_normal(n) * 10 + 5
    cats = rng.choice(["a", "b", "c"], n)
    lines = ["v,k,mass"] + [f"{'' if i % 7 == 0 else f'{v[i]:.4f}'},{cats[i]},{i}" for i in range(n)]
    write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    cfg = load_config(config(tmp_path, "d.csv", ", validation: 0.25, columns: {v: {missing: mean, indicator: true}}"))
    t = read_table(cfg)
    held = set(split_rows(n, 0.25, seed=0).tolist())
    train = [i for i in range(n) if i not in held]
    present = [float(f"{v[i]:.4f}") for i in train if i % 7]
    code = t.encoding.columns[0]
    assert code.fill == pytest.approx(np.mean(np.float32(present)), rel=1e-6)
    assert code.levels == [] and t.encoding.columns[1].levels == sorted(set(cats[train]))
    assert t.feature_names[:2] == ["v", "v_missing"]
    assert t.x_scaling.mean[1] == 0.0  # the indicator is not standardized


def _ran(tmp_path, data_file, tag):
    from backprop_cli.cli.app import app
    from typer.testing import CliRunner

    cfg = config(tmp_path, data_file, name=f"{tag}.yaml")
    r = CliRunner().invoke(app, ["train", "-c", str(cfg), "--save", str(tmp_path / f"{tag}.pt"), "-q",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    import torch

    state = torch.load(tmp_path / f"{tag}.pt", weights_only=False)
    return json.loads(r.stdout)["summary"], state["model"], state["data"]


def test_csv_tsv_parquet_and_gzip_give_bitwise_the_same_run(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    write(tmp_path / "d.csv", table_text())
    write(tmp_path / "d.tsv", table_text("\t"))
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        f.write(table_text())
    write(tmp_path / "semi.csv", table_text(";", ","))
    table = pacsv.read_csv(tmp_path / "d.csv", convert_options=pacsv.ConvertOptions(
        column_types={"island": pa.string(), "sex": pa.string()}, strings_can_be_null=True))
    pq.write_table(table, tmp_path / "d.parquet")
    write(tmp_path / "semi.yaml", "")
    runs = {tag: _ran(tmp_path, f, tag) for tag, f in
            [("csv", "d.csv"), ("tsv", "d.tsv"), ("gz", "d.csv.gz"), ("parquet", "d.parquet")]}
    cfg = config(tmp_path, "semi.csv", ", delimiter: ';', decimal: ','", name="semi.yaml")
    assert read_table(load_config(cfg)).x.tolist() == read_table(load_config(tmp_path / "csv.yaml")).x.tolist()
    base = runs["csv"]
    for tag, (summary, weights, data) in runs.items():
        assert summary["last_loss"] == base[0]["last_loss"], tag
        assert all(bool((weights[k] == base[1][k]).all()) for k in weights), tag
        assert data["encoding"] == base[2]["encoding"], tag


def test_predict_gives_every_row_a_prediction(tmp_path, cli):
    write(tmp_path / "d.csv", table_text())
    cfg = config(tmp_path, "d.csv")
    assert cli("train", "-c", cfg, "--save", tmp_path / "m.pt", "-q").exit_code == 0
    write(tmp_path / "new.csv", "island,bill,sex\nAtlantis,,\n,NA,male\nDream,38,martian\n")
    r = cli("predict", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "new.csv")
    assert r.exit_code == 2 and "new.csv:4: column 'sex': 'martian' is not a value of the training rows" in r.stderr
    write(tmp_path / "new.csv", "island,bill,sex\nAtlantis,,\n,NA,male\nDream,38,female\n")
    r = cli("predict", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "new.csv")
    assert r.exit_code == 0, r.output
    values = [float(v) for v in r.stdout.split()[1:]]
    assert len(values) == 3 and all(np.isfinite(values))
    r = cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "d.csv", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == len(ROWS) - 1  # the row without a target


def test_an_unknown_category_is_all_zeros_or_an_error_naming_line_and_column():
    enc = Encoding([ColumnCode("k", "category", "category", on_unknown="zeros")])
    train = Text(np.array([0, 1, 1, -1], dtype=np.int32), ["a", "b"])
    src = Source(None, where="f.csv", format="parquet")
    raw = RawTable(["k"], {"k": train}, 4, src)
    enc.fit(raw, None)
    assert enc.columns[0].levels == ["a", "b", "<missing>"]
    new = RawTable(["k"], {"k": Text(np.array([0, 1, 2, -1], dtype=np.int32), ["b", "zz", "a"])}, 4, src)
    np.testing.assert_array_equal(enc.transform(new, stage="predict"), [[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    enc.columns[0].on_unknown = "error"
    with pytest.raises(DataError, match=r"f.csv: row 2: column 'k': 'zz' is not a value of the training rows"):
        enc.transform(new, stage="predict")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["x", "y", "z", "w", ""]), min_size=1, max_size=30))
def test_one_hot_matches_numpy_equality(cells):
    """One-hot of any column: exactly one 1 per row with a known value, at the value's rank."""
    values = sorted(set(cells))
    codes = np.array([values.index(c) for c in cells], dtype=np.int32)
    from backprop_cli.data.readers import _drop_missing_values

    col = _drop_missing_values(codes, values)
    raw = RawTable(["k"], {"k": col}, len(cells), Source(None, where="f", format="parquet"))
    enc = Encoding([ColumnCode("k", "category", "most_frequent" if "" in cells and len(set(cells)) > 1
                               else "category")]).fit(raw, None)
    x = enc.transform(raw)
    levels = enc.columns[0].levels
    filled = [c or enc.columns[0].fill or "<missing>" for c in cells]
    want = (np.array(filled)[:, None] == np.array(levels)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(x, want)


def test_embedding_width_is_fastais_rule():
    assert [embedding_width(n) for n in (2, 10, 100, 1000, 10**6)] == [
        min(600, round(1.6 * n ** 0.56)) for n in (2, 10, 100, 1000, 10**6)]


def test_an_embedded_column_trains_and_predicts_unknown_values(tmp_path, cli):
    rng = np.random.default_rng(1)
    cities = rng.integers(0, 30, 80)
    lines = ["city,v,mass"] + [f"c{k},{rng.standard_normal():.3f},{k % 5}" for k in cities]
    write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    cfg = config(tmp_path, "d.csv", ", columns: {city: {encoding: embedding}}")
    assert cli("train", "-c", cfg, "--save", tmp_path / "m.pt", "-q").exit_code == 0
    import torch

    weights = torch.load(tmp_path / "m.pt", weights_only=False)["model"]
    n = len(set(cities.tolist())) + 1  # the cities seen, and <unknown>
    assert weights["encoder.tables.0.weight"].shape == (n, embedding_width(n))
    write(tmp_path / "new.csv", "city,v\nc3,0.1\nnowhere,0.2\n")
    r = cli("predict", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "new.csv")
    assert r.exit_code == 0 and len(r.stdout.split()) == 3


def test_overrides_replace_the_other_spelling(tmp_path, cli):
    path = config(tmp_path, "d.csv")
    write(tmp_path / "d.csv", table_text())
    text = path.read_text().replace("train: {steps: 6}", "train: {epochs: 2}")
    path.write_text(text)
    cfg = load_config(path, ["train.steps=5", "model.hidden_sizes=[3, 3]"])
    assert (cfg.train.steps, cfg.train.epochs, cfg.model.hidden_size, cfg.model.hidden_sizes) == (5, None, None, [3, 3])
    r = cli("config", "validate", "-c", path, "--set", "train.steps=5", "--set", "train.epochs=3")
    assert r.exit_code == 2 and "--set: train.epochs: give train.steps or train.epochs, not both" in r.stderr


def test_config_validate_checks_the_data_without_torch(tmp_path, cli):
    write(tmp_path / "d.csv", table_text())
    path = config(tmp_path, "d.csv", ", features: [island, nope], columns: {zz: {type: number}}")
    r = cli("config", "validate", "-c", path)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 2
    assert "data.features: column 'nope' is not in the header" in lines[0]
    assert "data.columns: column 'zz' is not in the header" in lines[1]
    path = config(tmp_path, "d.csv")
    path.write_text(path.read_text().replace("input_size: auto", "input_size: 5"))
    r = cli("config", "validate", "-c", path)
    assert r.exit_code == 2 and "the data gives 6 inputs (1 number + island (4) + sex (binary) = 6 inputs) but " \
                                "model.input_size is 5" in r.stderr
    path.write_text(path.read_text().replace("input_size: 5", "input_size: auto"))
    assert cli("config", "validate", "-c", path).stdout.endswith(": ok\n")
    r = cli("config", "show", "-c", path)
    assert "input_size: auto  # derived from the data: 1 number + island (4) + sex (binary) = 6 inputs" in r.stdout
    gpus = Path("/proc/driver/nvidia/gpus")
    if not (gpus.is_dir() and len(list(gpus.iterdir())) > 7):  # the device, judged without torch
        r = cli("config", "validate", "-c", path, "--set", "device=cuda:7")
        assert r.exit_code == 2 and r.stderr.startswith("error: device: 'cuda:7' is not available"), r.output


BAD = [
    ("unknown column", ", columns: {nope: {type: number}}", None, "data.columns: column 'nope' is not in the header"),
    ("number with text", ", columns: {island: {type: number}}", None,
     "d.csv:2: column 'island': not a number (got 'Biscoe')"),
    ("fill of the wrong type", ", columns: {bill: {type: number, missing: constant, fill: abc}}", None,
     "a number column's fill must be a number"),
    ("too many categories", "", "many", "more than the 1,000 a one-hot column takes"),
    ("one column", ", delimiter: ';'", None, "data.target: column 'mass' is not in the header"),
    ("binary with three values", ", columns: {island: {type: binary}}", None, "type binary takes two values"),
    ("validation types differ", ", validation: v.csv", "v", "v.csv:2: column 'bill': not a number (got 'long')"),
    ("validation categories differ", ", validation: v.csv", "v2",
     "v.csv:3: column 'island': 'Atlantis' is not a value of the training rows"),
    ("nested parquet", "", "nested", "Parquet type list<element: int64> is not supported (nested or binary)"),
    ("missing cell under error", ", missing: error", None, "d.csv:6: column 'island': missing value"),
]


@pytest.mark.parametrize("name,extra,files,message", BAD, ids=[b[0] for b in BAD])
def test_each_bad_table_is_one_line_and_exit_2(tmp_path, cli, name, extra, files, message):
    write(tmp_path / "d.csv", table_text())
    data = "d.csv"
    if files == "many":
        write(tmp_path / "d.csv", "island,bill,sex,mass\n" + "".join(f"k{i},1,m,{i}\n" for i in range(1_100)))
    elif files == "v":
        write(tmp_path / "v.csv", "island,bill,sex,mass\nBiscoe,long,male,3000\n")
    elif files == "v2":
        write(tmp_path / "v.csv", "island,bill,sex,mass\nBiscoe,30,male,3000\nAtlantis,31,male,3100\n")
    elif files == "nested":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"island": [[1, 2]], "bill": [1.0], "sex": ["m"], "mass": [1.0]}), tmp_path / "n.parquet")
        data = "n.parquet"
    path = config(tmp_path, data, extra)
    r = cli("train", "-c", path, "--save", tmp_path / "out.pt")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "out.pt").exists()


def test_init_sniffs_the_delimiter_and_decimal_and_names_ids(tmp_path, cli):
    lines = ["id;island;bill;mass"] + [f"{i};{['A', 'B', 'C'][i % 3]};{30 + i % 7},{i % 10};{3000 + 13 * i}"
                                      for i in range(60)]
    write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    r = cli("init", tmp_path / "c.yaml", "--csv", tmp_path / "d.csv", "--target", "mass")
    assert r.exit_code == 0, r.output
    assert "left out as ids (every value different): id" in r.stdout
    text = (tmp_path / "c.yaml").read_text()
    assert 'delimiter: ";"' in text and 'decimal: ","' in text and "standardize_target: true" in text
    t = read_table(load_config(tmp_path / "c.yaml"))
    assert t.columns == ["island", "bill"] and t.samples + t.val_samples == 60


def test_init_on_penguins_then_train_learns(tmp_path, cli):
    """The README's practice: init, then train with the written config. body_mass_g is regression."""
    path = tmp_path / "p.yaml"
    r = cli("init", path, "--csv", CONFIGS / "data" / "penguins.csv", "--target", "body_mass_g")
    assert r.exit_code == 0 and "standardize_target: true" in r.stdout
    r = cli("train", "-c", path, "--epochs", 15, "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["validation"]["r2"] > 0.6 and not doc["summary"]["warnings"]

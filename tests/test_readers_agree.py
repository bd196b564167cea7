"""The exact reader (Python's csv module) and the fast one (pyarrow) give the same table, or the same one-line
error, on every generated file (issue 23, item 1): header spellings (spaces, quotes, a BOM, CRLF, blank lines),
quoting and whitespace around values, float32's extremes and halfway values, empty cells and missing tokens,
text categories. The fast reader is forced on these small files with ``fast=True`` (``FAST_READER_BYTES`` is the
size threshold it has by default)."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backprop_cli.data.readers import Text, read_raw, source_of, to_float32
from backprop_cli.errors import DataError

EXTREMES = ["3.4028235e38", "-3.4028235e38", "3.40282356e38", "3.4028236e38", "-3.5e38", "1e39", "3.4028234663852886e38",
            "340282356779733661637539395458142568447", "340282356779733661637539395458142568448",
            "1.4e-45", "1e-45", "7e-46", "7.1e-46", "-1.4e-45", "1.1754944e-38", "1.1754942e-38", "1e-50", "-0", "0",
            "1.0000000596046448", "1.00000005960464477539062500001", "1.0000000596046447753906249999",
            "1.000000059604644775390625", "16777217", "1.5E+3", "+2.5", ".5", "5.", "1e5", "inf", "-inf", "1_0"]
MISSING = ["", "NA", " NA ", "nan", "null", "N/A"]
WORDS = ["cat", "dog", " Male", "Male ", "x y", "True", "False", "2020-01-01", "\u00e9t\u00e9", "a,b", 'say "hi"']


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _cell(draw, kind: str) -> str:
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from(MISSING))
    elif kind == "text" and draw(st.booleans()):
        text = draw(st.sampled_from(WORDS))
    else:
        text = draw(st.one_of(
            st.sampled_from(EXTREMES),
            st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.9g}"),
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.integers(-10 ** 12, 10 ** 12).map(str)))
    pad = draw(st.sampled_from(["", "", " ", "  ", "\t"]))
    text = pad + text + draw(st.sampled_from(["", "", " "]))
    if any(c in text for c in ',"\r\n') or draw(st.integers(0, 5)) == 0:
        text = _quoted(text)
    return text


@st.composite
def csv_files(draw):
    ncols = draw(st.integers(1, 4))
    names = [f"c{i}" for i in range(ncols)]
    kinds = [draw(st.sampled_from(["number", "text"])) for _ in names]
    spelled = []
    for name in names:
        s = draw(st.sampled_from(["{}", " {}", "{} ", " {} ", '"{}"', '" {} "', "\t{}"])).format(name)
        spelled.append(s)
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    rows = draw(st.integers(1, 12))
    lines = [",".join(spelled)]
    for _ in range(rows):
        lines.append(",".join(_cell(draw, k) for k in kinds))
        if draw(st.integers(0, 15)) == 0:
            lines.append("")  # a blank line: not a row in either reader
    text = nl.join(lines) + draw(st.sampled_from([nl, ""]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    if draw(st.integers(0, 7)) == 0:
        text = nl + text  # a blank line before the header
    declared = draw(st.booleans())
    return text, names, kinds, declared


def _read(path, names, kinds, declared, fast):
    try:
        if declared:
            raw = read_raw(source_of(path), numbers=[n for n, k in zip(names, kinds) if k == "number"],
                           texts=[n for n, k in zip(names, kinds) if k == "text"], fast=fast)
        else:
            raw = read_raw(source_of(path), infer=names, fast=fast)
    except DataError as e:
        return str(e)
    out = {"header": raw.header, "rows": raw.rows}
    for name in names:
        c = raw.columns[name]
        if isinstance(c, Text):
            out[name] = ("text", c.codes.tolist(), c.values)
        else:
            assert c.dtype == np.float32 and c.shape == (raw.rows,)
            bits = np.where(np.isnan(c), np.float32(np.nan), c).view(np.uint32)  # -0.0 and 0.0 apart; one NaN
            out[name] = ("number", bits.tolist())
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(csv_files())
@example(("a, b, y\n1, 2, 3\n4, 5, 6\n", ["a", "b", "y"], ["number"] * 3, False))
@example(("a,y\n3.4028235e38,1\n-3.4028235e38,2\n", ["a", "y"], ["number"] * 2, True))
@example(("a,y\n1.0000000596046448,1\n", ["a", "y"], ["number"] * 2, False))
def test_the_fast_and_exact_readers_give_the_same_table(tmp_path_factory, case):
    text, names, kinds, declared = case
    path = tmp_path_factory.mktemp("agree") / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    header_names = [n for n in names]
    exact = _read(path, header_names, kinds, declared, fast=False)
    fast = _read(path, header_names, kinds, declared, fast=True)
    assert fast == exact, text


def test_a_header_with_spaces_reads_the_same_both_ways(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a, b, y\n1, 2, 3\n4, 5, 6\n")
    for fast in (False, True):
        raw = read_raw(source_of(path), infer=["a", "b", "y"], fast=fast)
        assert raw.header == ["a", "b", "y"] and raw.columns["b"].tolist() == [2.0, 5.0]


@pytest.mark.parametrize("text, expect", [
    ("3.4028235e38", np.finfo(np.float32).max),  # float32's largest value as numpy prints it
    ("3.40282356e38", np.finfo(np.float32).max),  # below the halfway point to 2**128: rounds down
    ("1.4e-45", np.float32(1.4e-45)),  # the smallest subnormal
    ("7e-46", np.float32(0.0)),  # below half of it
    ("1.0000000596046448", np.nextafter(np.float32(1), np.float32(2))),  # above halfway in decimal
    ("1.0000000596046447753906249999", np.float32(1)),  # just below halfway
    ("1.000000059604644775390625", np.float32(1)),  # exactly halfway: to even
])
def test_numbers_round_once_from_their_text_to_float32(tmp_path, text, expect):
    """Against decimal arithmetic: the nearest float32 of the decimal text (pyarrow's parser and the exact
    reader's rounding both give it); casting the float64 would round 1.0000000596046448 down."""
    from decimal import Decimal

    v = to_float32(np.array([float(text)]), lambda rows: [text])[0]
    assert v == expect
    exact, lo, hi = Decimal(text), Decimal(float(np.nextafter(v, np.float32(-np.inf)))), Decimal(float(v))
    assert abs(exact - hi) <= abs(exact - lo)  # no float32 nearer below
    path = tmp_path / "t.csv"
    path.write_text(f"a,y\n{text},1\n")
    for fast in (False, True):
        assert read_raw(source_of(path), numbers=["a"], fast=fast).columns["a"][0] == expect


@pytest.mark.parametrize("text", ["3.4028236e38", "1e39", "340282356779733661637539395458142568448"])
def test_beyond_float32_is_the_same_error_both_ways(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(f"a,y\n1,2\n{text},1\n")
    messages = set()
    for fast in (False, True):
        with pytest.raises(DataError) as e:
            read_raw(source_of(path), numbers=["a"], fast=fast)
        messages.add(str(e.value))
    assert messages == {f"{path}:3: column 'a': {text} is beyond float32's range (±3.403e+38), the precision the "
                        "model computes in"}


@pytest.mark.parametrize("reader", ["exact", "pyarrow"])
def test_init_train_evaluate_predict_on_an_export_with_spaces(tmp_path, cli, monkeypatch, reader):
    """A common export: ', ' between cells, in the header too, and float32's largest value in a column the
    model leaves out: init, train, evaluate and predict read it the same with either reader."""
    monkeypatch.setattr("backprop_cli.data.readers.FAST_READER_BYTES", 0 if reader == "pyarrow" else 1 << 40)
    rng = np.random.default_rng(0)
    lines = ["size, rooms, city, note, price"]
    for i in range(60):
        size, rooms, city = rng.uniform(50, 150), int(rng.integers(1, 6)), ["Oslo", "Rome", "Lima"][i % 3]
        lines.append(f"{size:.2f}, {rooms}, {city}, {'3.4028235e38' if i % 7 == 0 else '1'}, "
                     f"{2 * size + 10 * rooms + 30 * (i % 3):.2f}")
    data = tmp_path / "houses.csv"
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "h.yaml"
    r = cli("init", cfg, "--csv", data, "--target", "price")
    assert r.exit_code == 0, r.output
    assert '"city": {type: category}' in cfg.read_text() and '"size": {type: number}' in cfg.read_text()
    r = cli("train", "-c", cfg, "--set", "data.features=[size, rooms, city]", "--epochs", 3, "--save", tmp_path / "m.pt",
            "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", "--checkpoint", tmp_path / "m.pt", "--data", data, "--format", "json")
    assert r.exit_code == 0, r.output
    json.loads(r.stdout)
    r = cli("predict", "--checkpoint", tmp_path / "m.pt", "--data", data)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 61  # a header and one line per row

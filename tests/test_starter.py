"""backprop init (runs/starter.py): it never writes YAML it did not mean, nor a config that does not
validate."""



import pytest
from conftest import files_in, write

# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("name", ["a\nmodel: 1\n#.yaml", "a\rb.yaml", "a\u2028b.yaml", "a\x1bb.yaml", "a\tb.yaml"])
def test_init_refuses_a_name_that_would_write_yaml_and_leaves_nothing(cli, tmp_path, monkeypatch, name):
    """Issue 16, item 20: the name went into the file's comments, its newline started YAML of its own."""
    monkeypatch.chdir(tmp_path)
    r = cli("init", name)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: init {name!r}: the path has a control or non-printable character ({name[1]!r} at position 1); "
        "choose a name without one"]
    assert files_in(tmp_path) == []


def test_init_refuses_a_csv_path_with_a_line_break(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d\n.csv", "a,y\n1,2\n3,4\n")
    r = cli("init", "c.yaml", "--csv", "d\n.csv")
    assert r.exit_code == 2 and "error: --csv 'd\\n.csv': the path has a control" in r.stderr
    assert files_in(tmp_path) == ["d\n.csv"]


def test_a_starter_that_does_not_validate_is_never_written(cli, tmp_path, monkeypatch):
    import backprop_cli.runs.starter as starter

    monkeypatch.chdir(tmp_path)
    real = starter.starter_config
    monkeypatch.setattr(starter, "starter_config", lambda *a: ("model: 1\n", "broken"))
    r = cli("init", "c.yaml")
    assert r.exit_code == 2 and r.stderr.startswith("error: c.yaml")
    assert files_in(tmp_path) == []
    monkeypatch.setattr(starter, "starter_config", real)
    assert cli("init", "c.yaml").exit_code == 0 and files_in(tmp_path) == ["c.yaml"]


# ------------------------------------------------------------ names and widths init writes (issue 23, items 6, 13)

def test_init_writes_a_column_named_with_an_emoji_as_itself_and_the_config_trains(cli, tmp_path):
    """Issue 23, item 13: json.dumps wrote "price\\ud83d\\ude00", which YAML reads as two lone surrogates:
    the config failed with "column ... not in header". The name is written as it is, and trains."""
    from backprop_cli.config import load_config

    write(tmp_path / "d.csv", "price😀,size,y\n" + "".join(f"{i * 1.5},{i % 4},{i % 3 / 2}\n" for i in range(12)))
    r = cli("init", tmp_path / "c.yaml", "--csv", tmp_path / "d.csv", "--target", "y")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c.yaml").read_text(encoding="utf-8")
    assert 'features: ["price😀", "size"]' in text and "\\ud83d" not in text
    assert load_config(tmp_path / "c.yaml").data.features == ["price😀", "size"]
    r = cli("train", "-c", tmp_path / "c.yaml", "--steps", 2, "-q", "--format", "json")
    assert r.exit_code == 0, r.output


def test_init_on_a_header_that_is_not_utf8_is_one_line_and_writes_nothing(cli, tmp_path):
    (tmp_path / "d.csv").write_bytes(b"caf\xe9,y\n1,2\n3,4\n")
    r = cli("init", tmp_path / "c.yaml", "--csv", tmp_path / "d.csv", "--target", "y")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == f"error: {tmp_path / 'd.csv'}: not a UTF-8 text file (invalid continuation byte at byte 3)\n"
    assert files_in(tmp_path) == ["d.csv"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12))
def test_a_name_init_quotes_reads_back_as_itself(name):
    """Every text a UTF-8 header may hold (controls, U+2028, BOM, emoji, quotes, backslashes), quoted as
    init writes it, is one line and reads back through the config's own YAML reader as the same text."""
    from backprop_cli.config.yamlfile import parse_yaml
    from backprop_cli.runs.starter import quoted

    q = quoted(name)
    assert q.isprintable()
    assert parse_yaml(f"k: {q}  # a comment\n", "t.yaml").data == {"k": name}


def test_init_bounds_the_columns_it_lists_and_what_it_writes_loads(cli, tmp_path):
    """Issue 23, item 6: init on 100,000 columns took 93 s and then refused its own config as an alias bomb.
    Up to MAX_INIT_COLUMNS the config it writes loads; beyond, one line from the header alone."""
    from backprop_cli.config import load_config
    from backprop_cli.runs.starter import MAX_INIT_COLUMNS

    n = MAX_INIT_COLUMNS - 1  # features, and y
    header = ",".join(f"c{i}" for i in range(n)) + ",y\n"
    write(tmp_path / "ok.csv", header + "".join(",".join(str((i + r) % 5) for i in range(n)) + f",{r / 10}\n"
                                                for r in range(3)))
    r = cli("init", tmp_path / "ok.yaml", "--csv", tmp_path / "ok.csv", "--target", "y")
    assert r.exit_code == 0, r.output
    assert len(load_config(tmp_path / "ok.yaml").data.features) == n
    wide = 50 * MAX_INIT_COLUMNS  # 100,000 columns: refused from the header, no row is read
    write(tmp_path / "wide.csv", ",".join(f"c{i}" for i in range(wide)) + "\n" + ",".join(["x"] * wide) + "\n")
    r = cli("init", tmp_path / "w.yaml", "--csv", tmp_path / "wide.csv", "--target", "c0")
    assert r.exit_code == 2 and not (tmp_path / "w.yaml").exists()
    assert r.stderr == (f"error: {tmp_path / 'wide.csv'}: 100,000 columns, more than the 2,000 init lists in a config "
                        "(a type and counts for each); write the config yourself with data.features (or leave it out: "
                        "every column but the target is an input)\n")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_init_suggests_class_weights_for_a_rare_class_in_every_format(cli, tmp_path, fmt):
    """Issue 22: the hint counted classes with the csv module, so a Parquet or TSV file got none; the
    survey's counts serve every format."""
    labels = ["common"] * 95 + ["rare"] * 5
    a, b = list(range(100)), [i % 7 for i in range(100)]
    path = tmp_path / f"d.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"a": a, "b": b, "label": labels}), path)
    else:
        sep = "," if fmt == "csv" else "\t"
        write(path, sep.join(["a", "b", "label"]) + "\n" + "".join(
            f"{x}{sep}{y}{sep}{z}\n" for x, y, z in zip(a, b, labels)))
    r = cli("init", tmp_path / "c.yaml", "--csv", path, "--target", "label")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c.yaml").read_text()
    assert '# the smallest class, "rare", has 5.0% of the rows' in text and "class_weights: auto}" in text

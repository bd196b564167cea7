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

"""plot's metrics file is an input (io/metrics_read.py): bounded, checked record by record."""


import os

import pytest
from conftest import within, write

# --------------------------------------------------------------------------- plot: the metrics file is an input

def _plot(cli, tmp_path, metrics):
    return cli("plot", metrics, "--out", tmp_path / "out.png")


def test_plot_reads_only_a_regular_file(cli, tmp_path):
    """Issue 16, item 9: `plot` read its METRICS file whole, whatever it was (a FIFO waited for ever)."""
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    for name, kind in (("fifo.jsonl", "a FIFO (named pipe)"), ("zero.jsonl", "a character device")):
        r = within(20, lambda: _plot(cli, tmp_path, tmp_path / name))
        assert r.exit_code == 2 and r.stderr.strip() == (
            f"error: {tmp_path / name}: is {kind}, not a regular file; the metrics file must be a regular file")


def test_plot_reads_at_most_its_cap(cli, tmp_path, monkeypatch):
    import backprop_cli.io.metrics_read as outputs

    monkeypatch.setattr(outputs, "MAX_METRICS_BYTES", 1000)
    m = write(tmp_path / "m.jsonl", '{"step": 1, "loss": 0.5}\n' * 100)
    r = _plot(cli, tmp_path, m)
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {m}: metrics file is too large (more than 1,000 bytes)"


GOOD = '{"step": 1, "loss": 0.5, "lr": 0.1}\n'


@pytest.mark.parametrize("line,why", [
    ('{"step": %s, "loss": 0.5}' % ("1" * 5000), "a number too long to read"),
    ('{"step": 2, "loss": %s}' % ("1" * 5000), "a number too long to read"),
    ('{"step": 2, "loss": %s}' % ("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ('{"step": %s, "loss": 0.5}' % ("1" * 400), "no integer 'step' from 0 to"),
    ('{"step": 2, "loss": 0.5, "lr": %s}' % ("1" * 400), "'lr' is a number out of range"),
    ('{"step": 2, "loss": 0.5, "optimizer": "%s"}' % ("x" * 100_000), "'optimizer' is a text of 100,000 characters"),
    ('{"step": 2, "loss": 0.5, "grad_norms": {"w": %s}}' % ("9" * 400), "'grad_norms.w' is a number out of range"),
    ('{"step": 2, "loss": 0.5, "lr": [1, 2]}', "'lr' is not a number, a short text or a mapping of them"),
], ids=["5000-digit step", "5000-digit loss", "deep", "400-digit step", "400-digit lr", "long label",
        "huge grad norm", "a list"])
def test_plot_stops_at_a_record_it_cannot_draw(cli, tmp_path, line, why):
    """Each was a traceback (AttributeError, RecursionError, OverflowError in matplotlib)."""
    m = tmp_path / "m.jsonl"
    m.write_text(GOOD + line + "\n")
    r = _plot(cli, tmp_path, m)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"warning: {m}:2: not ") and why in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 400


@pytest.mark.parametrize("size", ["²x200", "1" * 5000 + "x200", "200x٣٠٠"])
def test_plot_sizes_are_ascii_digits(cli, tmp_path, size):
    m = write(tmp_path / "m.jsonl", GOOD)
    r = cli("plot", m, "--out", tmp_path / "out.png", "--size", size)
    text = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and "expected WIDTHxHEIGHT in pixels" in text and "Traceback" not in text


# ----------------------------------------------------------------- a BOM, and the series bound (issue 23, items 6, 13)

@pytest.mark.parametrize("suffix,text", [
    ("csv", "step,loss,grad_norms.layer1.weight\n1,0.5,2.0\n2,0.25,1.0\n"),
    ("jsonl", '{"step": 1, "loss": 0.5, "grad_norms": {"layer1.weight": 2.0}}\n'
              '{"step": 2, "loss": 0.25, "grad_norms": {"layer1.weight": 1.0}}\n'),
])
def test_a_metrics_file_with_a_byte_order_mark_reads_as_without(tmp_path, suffix, text):
    """A spreadsheet or an editor on Windows writes a BOM; plot refused such a CSV ('no step column')."""
    from backprop_cli.io.metrics_read import load_metrics

    plain, bom = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
    plain.write_text(text, encoding="utf-8")
    bom.write_text(text, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    got = load_metrics(bom)
    assert got.stopped is None and got.records == load_metrics(plain).records
    assert [r["loss"] for r in got.records] == [0.5, 0.25] and got.records[1]["grad_norms"] == {"layer1.weight": 1.0}


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_more_series_than_a_panel_draws_is_one_line(cli, tmp_path, suffix):
    """Issue 23, item 6: 20,000 series took minutes and 780 MB; up to MAX_SERIES per panel are read,
    beyond is one line, exit 2, nothing written."""
    import json

    from backprop_cli.io.metrics_read import MAX_SERIES, load_metrics

    def metrics(path, n):
        names = [f"l{i}.weight" for i in range(n)]
        if suffix == "csv":
            return write(path, "step,loss," + ",".join(f"grad_norms.{m}" for m in names) + "\n" + "".join(
                f"{s},1.0," + ",".join(["0.5"] * n) + "\n" for s in (1, 2)))
        return write(path, "".join(json.dumps({"step": s, "loss": 1.0, "grad_norms": dict.fromkeys(names, 0.5)})
                                   + "\n" for s in (1, 2)))

    assert len(load_metrics(metrics(tmp_path / f"ok.{suffix}", MAX_SERIES)).records) == 2
    bad = metrics(tmp_path / f"bad.{suffix}", 20 * MAX_SERIES)
    r = _plot(cli, tmp_path, bad)
    assert r.exit_code == 2 and not (tmp_path / "out.png").exists()
    assert r.stderr == (f"error: {bad}: 20,000 grad_norms series, more than the 1,000 a panel of the dashboard "
                        "draws (a net of at most 500 layers)\n")

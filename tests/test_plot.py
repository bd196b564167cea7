"""backprop plot and train --plot: the dashboard of a run, from any metrics file of ours."""

import json

import pytest

from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """train's metrics of a 3-hidden-layer ReLU net, as JSONL and as CSV."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    folder = tmp_path_factory.mktemp("metrics")
    out = {}
    for suffix in ("jsonl", "csv"):
        path = folder / f"run.{suffix}"
        r = CliRunner().invoke(app, ["train", "-c", str(REG), "--steps", "40", "--log-every", "10", "-q",
                                     "--set", "model.hidden_size=null", "--set", "model.hidden_sizes=[16,16,16]",
                                     "--set", "model.activation=relu", "--metrics", str(path)])
        assert r.exit_code == 0, r.output
        out[suffix] = path
    return out


def drawn(monkeypatch):
    """Capture what the dashboard is asked to draw."""
    from backprop_cli.render import plots

    calls = []
    real = plots.dashboard
    monkeypatch.setattr(plots, "dashboard", lambda path, runs, *a, **kw: calls.append(runs) or real(path, runs, *a, **kw))
    return calls


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_plot_a_train_metrics_file(cli, metrics, tmp_path, suffix, monkeypatch):
    calls = drawn(monkeypatch)
    out = tmp_path / "run.png"
    r = cli("plot", metrics[suffix], "--out", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"wrote {out} (40 records)" and r.stderr == ""
    assert out.read_bytes().startswith(PNG)
    (records,) = calls[0].values()
    assert [x["step"] for x in records] == list(range(1, 41))
    assert [x["step"] for x in records if "activations" in x] == [1, 10, 20, 30, 40]
    assert list(records[0]["activations"]) == ["layer1", "layer2", "layer3"]


def test_plot_svg_size_and_default_name(cli, metrics, tmp_path):
    import shutil

    src = shutil.copy(metrics["jsonl"], tmp_path / "run.jsonl")
    r = cli("plot", src)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.png").read_bytes().startswith(PNG)
    r = cli("plot", src, "--out", tmp_path / "run.svg", "--size", "800x400")
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "run.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and 'width="576pt" height="288pt"' in svg  # 800x400 px at 100 dpi


def test_plot_compare_optimizers_metrics_one_run_per_optimizer(cli, tmp_path, monkeypatch):
    m = tmp_path / "c.jsonl"
    r = cli("compare-optimizers", "-c", REG, "--steps", 15, "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    calls = drawn(monkeypatch)
    r = cli("plot", m, "--out", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert "2 runs" in r.stdout
    runs = calls[0]
    assert list(runs) == ["sgd lr=0.1 momentum=0.9", "adam lr=0.001"]
    assert all([x["step"] for x in recs] == list(range(1, 16)) for recs in runs.values())


def test_val_loss_records_are_drawn(tmp_path, monkeypatch):
    """Validation records (val_loss) are read and drawn with the loss."""
    from backprop_cli.io.metrics_read import load_metrics
    from backprop_cli.render.plots import dashboard

    m = tmp_path / "v.jsonl"
    lines = [{"step": s, "loss": 1 / s, "grad_norm": 1.0, "grad_norms": {"layer1.weight": 1.0}, "lr": 0.1, "time": 0}
             for s in range(1, 11)]
    lines += [{"step": 10, "epoch": 1, "val_loss": 0.2}]
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = load_metrics(m)
    assert got.stopped is None and got.records[-1] == {"step": 10, "epoch": 1, "val_loss": 0.2}
    import matplotlib.axes

    labels = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, *a, **kw: labels.append(kw.get("label")) or real(ax, *a, **kw))
    dashboard(tmp_path / "v.png", {"": got.records})
    assert "val_loss" in labels and "loss" in labels


def test_a_truncated_file_is_drawn_up_to_the_bad_line(cli, metrics, tmp_path, monkeypatch):
    lines = metrics["jsonl"].read_text().splitlines()
    m = tmp_path / "cut.jsonl"
    m.write_text("\n".join(lines[:25]) + "\n" + lines[25][: len(lines[25]) // 2])  # killed mid-write
    calls = drawn(monkeypatch)
    r = cli("plot", m, "--out", tmp_path / "cut.png")
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"warning: {m}:26: not valid JSON (") and "truncated?" in r.stderr
    assert r.stderr.rstrip().endswith("; plotting the 25 record(s) before it")
    assert len(r.stderr.strip().splitlines()) == 1
    assert len(calls[0][""]) == 25 and (tmp_path / "cut.png").exists()

    c = tmp_path / "cut.csv"
    rows = metrics["csv"].read_text().splitlines()
    c.write_text("\n".join(rows[:11]) + "\n" + rows[11][:30] + "\n")
    r = cli("plot", c, "--out", tmp_path / "cutc.png")
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"warning: {c}:12: ") and "plotting the 10 record(s) before it" in r.stderr


@pytest.mark.parametrize("content, why", [
    ("", "no records"),
    ("hello world\n", "1: not valid JSON"),
    ('{"a": 1}\n', "1: not a metrics record: no integer 'step'"),
    ('[1, 2]\n', "1: not a metrics record: not a JSON object"),
    ('{"step": 1, "loss": "x"}\n', "1: not a metrics record: no 'loss' number"),
    ('{"step": 1, "loss": 1.0, "grad_norms": [1]}\n', "'grad_norms' is not a mapping of numbers"),
])
def test_a_file_that_is_not_ours_is_one_line_exit_2(cli, tmp_path, content, why):
    m = tmp_path / "x.jsonl"
    m.write_text(content)
    r = cli("plot", m)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"error: {m}: not a backprop metrics file (") and why in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name, content, why", [
    ("x.csv", "a,b\n1,2\n", "the header has no 'step' and 'loss' columns"),
    ("x.csv", "step,loss\nfoo,1\n", "column 'step': not a number"),
    ("x.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", "not valid JSON"),
    ("x.txt", "step,loss\n1,2\n", "a metrics file ends in .jsonl or .csv"),
    ("missing.jsonl", None, "no such metrics file"),
])
def test_bad_metrics_inputs(cli, tmp_path, name, content, why):
    m = tmp_path / name
    if isinstance(content, bytes):
        m.write_bytes(content)
    elif content is not None:
        m.write_text(content)
    r = cli("plot", m, "--out", tmp_path / "o.png")
    assert r.exit_code == 2 and why in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_plot_does_not_import_torch(metrics, tmp_path):
    from test_imports import run

    r = run(["plot", metrics["jsonl"], "--out", tmp_path / "p.png"], tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr


def test_train_plot_writes_the_dashboard(cli, tmp_path, monkeypatch):
    calls = drawn(monkeypatch)
    out = tmp_path / "t.svg"
    r = cli("train", "-c", REG, "--steps", 12, "--log-every", 4, "--plot", out)
    assert r.exit_code == 0, r.output
    assert f"plot:       wrote {out}" in r.stdout
    assert out.read_text().lstrip().startswith("<?xml")
    assert [x["step"] for x in calls[0][""]] == list(range(1, 13))


def test_train_plot_bad_path_costs_nothing(cli, tmp_path):
    r = cli("train", "-c", REG, "--plot", tmp_path / "p.pdf")
    assert r.exit_code == 2 and "plot file must end in .png or .svg" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

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


def _records(steps=60, lr=lambda s: 0.1, runs=("",)):
    out = {}
    for k, run in enumerate(runs):
        out[run] = [{"step": s, "loss": 1.0 / (s + k), "grad_norm": 1.0, "lr": lr(s), "time": 0,
                     "grad_norms": {"layer1.weight": 0.3 / s, "layer2.weight": 1.0 / s},
                     "update_ratios": {"layer1.weight": 1e-2 / s, "layer1.bias": 2e-2 / s, "layer2.weight": 3e-3,
                                       "layer2.bias": 5e-3},
                     "activations": {"layer1": {"mean": 0.0, "std": 0.5 + s / 1000, "dead_fraction": 0.1}}}
                    for s in range(1, steps + 1)]
    return out


@pytest.mark.parametrize("size", [(900, 500), (1500, 850), (2400, 1400)])
@pytest.mark.parametrize("case", ["constant lr", "scheduled lr, two runs"])
def test_the_dashboard_fits_the_size_asked(size, case):
    """At 900x500, the default and 2400x1400: every title inside the figure and clear of the others, no two
    tick labels of an axis overlapping; a constant learning rate is a line of text, not a panel."""
    import matplotlib.pyplot as plt

    from backprop_cli.render import plots

    if case == "constant lr":
        runs = _records()
    else:
        runs = _records(lr=lambda s: 0.1 * 0.95 ** s, runs=("sgd lr=0.1", "adam lr=0.001"))
    with plt.rc_context(plots._fonts(size)):
        fig = plots.dashboard_figure(runs, size, title="run.jsonl")
    try:
        renderer = fig.canvas.get_renderer()
        assert (round(fig.bbox.width), round(fig.bbox.height)) == size
        titles = [ax.get_title() for ax in fig.axes]
        texts = [t for t in fig.texts if t is not fig._suptitle]  # the run's title is not a note
        if case == "constant lr":
            assert "learning rate" not in titles and len(fig.axes) == 5
            assert [t.get_text() for t in texts] == ["learning rate 0.1 at every step"]
        else:
            assert "learning rate" in titles and len(fig.axes) == 6 and not texts
        boxes = [(ax, ax.title.get_window_extent(renderer)) for ax in fig.axes]
        for ax, box in boxes:
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (ax.get_title(), box)
            for other, b in boxes:
                assert other is ax or not plots._overlap(box, b), (ax.get_title(), other.get_title())
            for axis in (ax.xaxis, ax.yaxis):
                ticks = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                for i, a in enumerate(ticks):
                    assert not any(plots._overlap(a, b) for b in ticks[i + 1:]), (ax.get_title(), size)
        for t in texts:
            box = t.get_window_extent(renderer)
            assert box.y0 >= 0 and not any(plots._overlap(box, ax.get_tightbbox(renderer)) for ax in fig.axes)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------- every text drawn is data (issue 23, item 3)

def _named(name="layer1", lr=0.1, label=None, steps=5):
    recs = [{"step": s, "loss": 1 / s, "grad_norm": 1.0, "grad_norms": {f"{name}.weight": 1.0 + s}, "lr": lr,
             "time": 0, "activations": {name: {"std": 0.5, "dead_fraction": 0.1}}} for s in range(1, steps + 1)]
    if label is not None:
        recs = [dict(r, optimizer=label) for r in recs] + [dict(r, optimizer="b") for r in recs]
    return recs


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("records", [
    _named(name="$\\nope$"), _named(name="\ud800"), _named(label="run $a$ \ud800"),
    _named(lr=1.7e308), _named(lr=-1.7e308), _named(name="a\\", label="$$"),
], ids=["mathtext-series", "lone-surrogate", "run-label", "lr-1.7e308", "lr--1.7e308", "dollars"])
def test_names_and_numbers_of_the_file_are_drawn_as_data(cli, tmp_path, records):
    m = _jsonl(tmp_path / "run_$_a_$.jsonl", records)
    for out in (tmp_path / "o.png", tmp_path / "o.svg"):
        r = cli("plot", m, "--out", out)
        assert r.exit_code == 0, r.output
        assert out.stat().st_size > 1000
    assert "run_$_a_$.jsonl" in (tmp_path / "o.svg").read_text()  # the title, as written (SVG names each text)


def test_a_constant_lr_beyond_what_an_axis_holds_is_said_in_words(tmp_path):
    """An lr of 1.7e308 in every record: the line of text says it as it is (the panels draw it as a gap)."""
    from backprop_cli.render import plots

    assert plots._lr_line({"": _named(lr=1.7e308)}) == "learning rate 1.7e+308 at every step"
    assert plots._nums([1.7e308, -1e301, 1e300, 10**400, True, None, 2]) == pytest.approx(
        [float("nan")] * 2 + [1e300] + [float("nan")] * 3 + [2.0], nan_ok=True)


def test_every_text_but_the_axis_numbers_is_plain(tmp_path):
    """Titles, labels, legends and notes are never mathtext; the tick labels matplotlib formats from
    numbers (10^0 on a log axis) keep their markup, so the axes still read 10⁰, not $\\mathdefault{…}$."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from backprop_cli.render import plots

    runs = {"sgd $x$": _named(name="$\\alpha$"), "adam": _named()}
    fig = plots.dashboard_figure(runs, (900, 500), title="budget_$5k_$10k.yaml")
    try:
        fig.canvas.draw()
        ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                 for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                 for t in (tick.label1, tick.label2, axis.offsetText)}
        data = [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_text()]
        assert {"budget_$5k_$10k.yaml", "sgd $x$", "$\\alpha$"} <= {t.get_text() for t in data}
        assert all(not t.get_parse_math() and not t.get_usetex() for t in data)
        loss_ticks = [t.get_text() for t in fig.axes[0].yaxis.get_ticklabels(which="both") if t.get_text()]
        assert loss_ticks and all(t.startswith("$\\mathdefault{") for t in loss_ticks)  # log axis: 10^k
        assert all(t.get_parse_math() for t in fig.axes[0].yaxis.get_ticklabels(which="both"))
    finally:
        plt.close(fig)


@pytest.mark.parametrize("command", ["train", "find-lr", "compare-optimizers"])
def test_a_config_named_with_dollars_plots(cli, tmp_path, command):
    import shutil

    config = shutil.copy(REG, tmp_path / "budget_$5k_$10k.yaml")
    out = tmp_path / "p.png"
    r = cli(command, "-c", config, "--steps", 10 if command == "find-lr" else 4, "--plot", out,
            *({"train": ["-q"], "compare-optimizers": ["-q", "-o", "sgd", "-o", "adam"]}.get(command, [])))
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(PNG)


def _failing_savefig(monkeypatch):
    import matplotlib.figure

    def fail(self, *a, **kw):
        raise ValueError("arange: cannot\ncompute length")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)


def test_train_a_figure_that_fails_costs_only_itself(cli, tmp_path, monkeypatch):
    _failing_savefig(monkeypatch)
    save, metrics, out = tmp_path / "m.pt", tmp_path / "m.jsonl", tmp_path / "p.png"
    r = cli("train", "-c", REG, "--steps", 6, "--plot", out, "--save", save, "--metrics", metrics)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == (f"error: {out}: the figure could not be drawn "
                                "(ValueError: arange: cannot compute length)")
    assert "done:" in r.stdout and str(save) in r.stdout  # the summary, and the other outputs written
    assert save.exists() and len(metrics.read_text().splitlines()) == 6 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "m.pt"]  # no temporary file stays


@pytest.mark.parametrize("command", ["find-lr", "compare-optimizers", "plot"])
def test_other_commands_a_figure_that_fails_is_one_line_exit_2_after_the_rest(cli, tmp_path, monkeypatch, metrics,
                                                                              command):
    out = tmp_path / "p.png"
    args = {"find-lr": ["find-lr", "-c", REG, "--steps", 10, "--format", "json"],
            "compare-optimizers": ["compare-optimizers", "-c", REG, "--steps", 3, "--format", "json",
                                   "-o", "sgd", "-o", "adam", "--metrics", tmp_path / "c.jsonl"],
            "plot": ["plot", metrics["jsonl"]]}[command]
    _failing_savefig(monkeypatch)
    r = cli(*args, "--plot" if command != "plot" else "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == f"error: {out}: the figure could not be drawn (ValueError: arange: cannot compute length)"
    assert "Traceback" not in r.output and not out.exists()
    if command != "plot":
        json.loads(r.stdout)  # the result is still shown
    if command == "compare-optimizers":
        assert (tmp_path / "c.jsonl").exists()


from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["$", "$$", "$x$", "\\", "$\\frac$", "\ud800", "\\$a$", "^_{}", "\x1b[2J", "a\nb", "$\\nope$"])
_any_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**63),
                        st.sampled_from([1.7e308, -1.7e308, 5e-324, 1e306, 1e307]))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_any_text, min_size=1, max_size=3), labels=st.lists(_any_text, max_size=2),
       title=_any_text, values=st.lists(_any_number, min_size=1, max_size=4))
@example(names=["¹"], labels=[], title="", values=[0.0])  # a digit that is not ASCII: the natural order's int()
@example(names=["layer" + "9" * 5000], labels=[], title="", values=[1.0])  # more digits than int() takes
def test_any_names_and_numbers_draw(tmp_path, names, labels, title, values):
    """Whatever names (series, layers, runs, the file's title) and numbers a metrics file may hold, the
    dashboard is written (an OutputError would fail the test: none is expected)."""
    from backprop_cli.render.plots import dashboard

    def recs(label):
        return [{"step": s, "loss": values[s % len(values)], "lr": values[(s + 1) % len(values)],
                 "grad_norms": {f"{n}.weight": values[(s + k) % len(values)] for k, n in enumerate(names)},
                 "update_ratios": {f"{n}.bias": values[(s + k + 1) % len(values)] for k, n in enumerate(names)},
                 "activations": {n: {"std": values[s % len(values)], "dead_fraction": values[0]} for n in names},
                 **({"optimizer": label} if label else {})} for s in range(1, 4)]

    runs = {label: recs(label) for label in labels} or {"": recs("")}
    out = tmp_path / "f.png"
    dashboard(out, runs, (400, 300), title=title)
    assert out.read_bytes().startswith(PNG)


def test_a_panel_of_many_series_says_how_many_its_legend_leaves_out():
    """Issue 23, item 6: each panel's series are kept in a dict (the list.index was quadratic) and its legend
    lists LEGEND_MAX entries at most, the last saying how many more lines the panel draws."""
    import matplotlib.pyplot as plt

    from backprop_cli.render import plots

    n = 60
    runs = {"": [{"step": s, "loss": 1.0 / s, "grad_norms": {f"layer{i}.weight": 1.0 + i / s for i in range(n)}}
                 for s in (1, 2, 3)]}
    fig = plots.dashboard_figure(runs, (900, 500))
    try:
        grad = fig.axes[1]
        assert len(grad.lines) == n
        labels = [t.get_text() for t in grad.get_legend().get_texts()]
        assert len(labels) == plots.LEGEND_MAX and labels[-1] == f"… and {n - plots.LEGEND_MAX + 1} more"
        assert labels[:3] == ["layer0", "layer1", "layer2"]  # in natural order: layer2 before layer10
    finally:
        plt.close(fig)

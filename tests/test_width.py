"""Every command's output fits 60, 80, 100 and 150 columns and shows every number of its JSON whole.

Each command runs once per width, with its output recorded by a rich Console of that width (as a
terminal, and as plain output with COLUMNS set); the JSON document of the same run is captured where
the CLI builds it. Every number the text is meant to show is formatted with render.console.fmt (the shown
precision) and must appear as a whole token: a number cut to 0.0960 from 0.09603 is not found. A
column may be missing only if the note under its table names it, and only if it is one this test
allows to give way; the numbers each command exists to show never do.
"""

import io
import json
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from backprop_cli.render import documents

from backprop_cli.render import compare as render_compare
from backprop_cli.render import console as render_console
from backprop_cli.render import fit as render_fit
from backprop_cli.render import train as render_train
from backprop_cli.render.console import fmt
from conftest import CONFIGS

WIDTHS = [60, 80, 100, 150]
MODES = ["terminal", "plain"]
NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?(?:e[+-]\d+)?|nan|inf)")
HIDDEN = re.compile(r"not shown at this width: ([^(]*)\(")

DEEP = """\
seed: 0
device: cpu
model: {input_size: 8, hidden_sizes: [16, 16, 16, 16, 16], output_size: 2, activation: tanh}
optimizer: {name: sgd, lr: 0.05}
scheduler: {name: step, step_size: 5, gamma: 0.5}
data: {kind: synthetic, samples: 128, batch_size: 32}
train: {steps: 12, log_every: 4}
"""


class Run:
    def __init__(self, text: str, width: int, plain: bool, stdout: str, docs: dict):
        self.text, self.width, self.plain, self.stdout, self.docs = text, width, plain, stdout, docs
        self.lines = text.splitlines()
        self.tokens = set(NUMBER.findall(text))
        flat = " ".join(text.split())
        self.hidden = {name.strip() for m in HIDDEN.finditer(flat) for name in m.group(1).split(",")}

    def check_fits(self):
        too_long = [line for line in self.lines if cell_len(line) > self.width]
        assert not too_long, f"{len(too_long)} line(s) wider than {self.width}:\n" + "\n".join(too_long)
        if self.plain:
            assert all(line == line.rstrip() for line in self.lines), "trailing spaces in plain output"

    def shows(self, value, shown: str = None) -> None:
        """``value`` (a JSON number, or a string) appears whole."""
        if value is None:
            return
        text = shown if shown is not None else (value if isinstance(value, str) else fmt(value))
        if isinstance(value, str) and shown is None:
            assert any(text in line for line in self.lines), f"{text!r} not shown whole\n{self.text}"
        else:
            assert text in self.tokens, f"{text} (from {value!r}) not shown whole\n{self.text}"

    def column(self, name: str, may_hide: set) -> bool:
        """Whether column ``name`` is shown; when not, the note must name it and it must be allowed to go."""
        if name in self.hidden:
            assert name in may_hide, f"{name} was hidden but must always be shown"
            return False
        return True


@pytest.fixture
def record(cli, monkeypatch):
    """Run the CLI with every console recorded at ``width``; returns a :class:`Run`."""
    monkeypatch.setattr(render_train.TrainReport, "show_progress", False)
    monkeypatch.setattr(render_compare.CompareProgress, "show_progress", False)
    monkeypatch.setattr(render_console.Starting, "show", False)  # the loading line: a live display
    docs: dict = {}
    for name in ("inspect_document", "check_document", "explain_document", "compare_document", "find_lr_document",
                 "evaluate_document"):
        original = getattr(documents, name)

        def keep(*args, _name=name, _original=original):
            docs[_name] = _original(*args)
            return docs[_name]

        monkeypatch.setattr(documents, name, keep)

    def run(width: int, mode: str, *args, code: int = 0) -> Run:
        plain = mode == "plain"
        console = Console(record=True, width=width, force_terminal=not plain, no_color=plain, file=io.StringIO(),
                          highlight=False, emoji=False)
        monkeypatch.setattr(render_console, "make_console", lambda stream=None: console)
        monkeypatch.setattr(render_console, "plain_output", lambda stream=None: plain)
        docs.clear()
        r = cli(*args)
        assert r.exit_code == code, r.output
        return Run(console.export_text(styles=False), width, plain, r.stdout, dict(docs))

    return run


PENGUINS = f"""\
seed: 0
device: cpu
model: {{input_size: 4, hidden_size: 16, output_size: 3}}
loss: cross_entropy
optimizer: {{name: adam, lr: 0.01}}
data: {{kind: csv, path: "{CONFIGS / 'data' / 'penguins.csv'}", target: species, missing: drop_rows,
        features: [bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g], validation: 0.2,
        standardize: true, batch_size: 64}}
train: {{epochs: 4}}
"""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("config,args", [
    (CONFIGS / "seed.yaml", []),
    (CONFIGS / "regression.yaml", ["--steps", "25", "--log-every", "5", "--set", "train.clip_grad_norm=0.5"]),
    ("deep", []),
    ("penguins", []),
], ids=["seed", "regression", "deep", "validation"])
def test_train(record, tmp_path, width, mode, config, args):
    if config in ("deep", "penguins"):
        text = DEEP if config == "deep" else PENGUINS
        config = tmp_path / f"{config}.yaml"
        config.write_text(text)
    metrics = tmp_path / "m.jsonl"
    run = record(width, mode, "train", "-c", config, *args, "--metrics", metrics, "--format", "json")
    run.check_fits()
    doc = json.loads(run.stdout)
    s = doc["summary"]
    for key in ("steps", "first_loss", "last_loss", "best_loss", "best_step", "wall_time", "steps_per_s"):
        run.shows(s[key])
    if s["clipped"]:
        run.shows(s["clipped"])
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    names = list(records[0]["grad_norms"])
    log_every = 4 if "deep" in str(config) else 5 if args else 1
    if "penguins" in str(config):
        log_every = next(r["step"] for r in records if "val_loss" in r)  # one row per epoch: every evaluation
    may_hide = set(names) | {"lr", "epoch", "epoch_loss", "train_loss", "train_accuracy", "val_accuracy",
                             "val_f1_macro", "val_roc_auc", "val_mae", "val_rmse", "val_r2"}
    evaluation = [k for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
                  if any(k in r for r in records) and run.column(k, may_hide)]
    assert "val_loss" in evaluation or "val_loss" not in records[-1]  # never hidden
    for key in evaluation:
        for rec in records:
            if key in rec:
                run.shows(rec[key])
    if "validation" in s and s["validation"]:
        run.shows(s["validation"]["loss"])
        run.shows(s["validation"]["accuracy"])
        for row in s["validation"]["per_class"]:
            run.shows(row["class"])
            for k in ("precision", "recall", "f1", "support"):
                run.shows(row[k])
    shown = [n for n in names if run.column(n, may_hide)]
    assert shown or evaluation, "no per-parameter column left (only evaluation columns may take their place)"
    lr_shown = run.column("lr", may_hide)
    for rec in records:
        if rec["step"] == 1 or rec["step"] % log_every == 0 or rec["step"] == len(records):
            run.shows(rec["step"])
            run.shows(rec["loss"])
            run.shows(rec["grad_norm"])
            for n in shown:
                run.shows(rec["grad_norms"][n])
            if lr_shown:
                run.shows(rec["lr"])
    if width >= 150 and "deep" not in str(config) and "penguins" not in str(config):
        assert not run.hidden  # the classic and the regression net: every column at 150 columns
    if width >= 100 and "deep" not in str(config) and "penguins" not in str(config):
        assert run.hidden <= {"lr"}  # at 100: all but a constant lr (the start panel shows it)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_inspect_grads(record, width, mode):
    run = record(width, mode, "inspect-grads", "-c", CONFIGS / "regression.yaml", "--train-steps", "3",
                 "--clip", "0.5")
    run.check_fits()
    doc = run.docs["inspect_document"]
    run.shows(doc["loss"])
    run.shows(doc["batch"]["index"])
    run.shows(doc["batch"]["size"])
    may_hide = {"shape", "mean", "std", "min", "max", "zero_fraction", "grad_to_weight"}
    for name, p in doc["params"].items():
        run.shows(name)
        for key in ("norm", "mean", "std", "min", "max", "abs_max", "zero_fraction", "grad_to_weight"):
            if run.column(key, may_hide):
                run.shows(p[key])
        if run.column("shape", may_hide):
            run.shows("×".join(str(d) for d in p["shape"]))
        run.shows(doc["clip"]["params"][name]["norm"])
    run.shows(doc["clip"]["total_norm_before"])
    run.shows(doc["clip"]["total_norm_after"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_check_grads(record, width, mode):
    run = record(width, mode, "check-grads", "-c", CONFIGS / "seed.yaml")
    run.check_fits()
    doc = run.docs["check_document"]
    run.shows(doc["loss"])
    may_hide = {"elements", "chain_rule.max_rel", "finite_diff.max_rel", "finite_diff.checked"}
    for name, p in doc["params"].items():
        run.shows(name)
        run.shows(p["chain_rule"]["max_abs"])
        run.shows(p["finite_diff"]["max_abs"])
        if run.column("chain_rule.max_rel", may_hide):
            run.shows(p["chain_rule"]["max_rel"])
        if run.column("finite_diff.max_rel", may_hide):
            run.shows(p["finite_diff"]["max_rel"])
        if run.column("finite_diff.checked", may_hide):
            run.shows(p["finite_diff"]["checked"])
    assert run.text.count("PASS") >= len(doc["params"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_explain(record, width, mode):
    run = record(width, mode, "explain", "--updates", "4", "--x", "1.5", "--w2", "-0.4")
    run.check_fits()
    doc = run.docs["explain_document"]
    for section in ("inputs", "forward", "chain_rule", "autograd", "update"):
        for value in doc[section].values():
            run.shows(value)
    for h in doc["history"]:
        for key in ("step", "loss", "grad_w1", "grad_w2", "w1", "w2"):
            run.shows(h[key])
    run.shows(doc["history"][-1]["loss_after"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_find_lr(record, width, mode):
    run = record(width, mode, "find-lr", "-c", CONFIGS / "regression.yaml", "--steps", "60")
    run.check_fits()
    doc = run.docs["find_lr_document"]
    run.shows(doc["suggested_lr"])
    run.shows(doc["lr_min"])
    run.shows(doc["lrs"][0])
    run.shows(doc["lrs"][-1])
    run.shows(len(doc["lrs"]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_evaluate(record, cli, tmp_path, width, mode):
    cfg = tmp_path / "penguins.yaml"
    cfg.write_text(PENGUINS)
    assert cli("train", "-c", cfg, "--save-best", tmp_path / "best.pt", "-q").exit_code == 0
    run = record(width, mode, "evaluate", "--checkpoint", tmp_path / "best.pt")
    run.check_fits()
    doc = run.docs["evaluate_document"]
    for key in ("step", "rows", "loss", "accuracy"):
        run.shows(doc[key])
    for row in doc["per_class"]:
        run.shows(row["class"])
        for k in ("precision", "recall", "f1", "support"):
            run.shows(row[k])
    for row in doc["confusion"]:
        for v in row:
            run.shows(v)


def _steps_to_10pct(m: dict, seeds: int) -> str:
    if m["mean"] is None:
        return "never"
    return f"{m['mean']:.0f}" if seeds == 1 else f"{m['mean']:.1f}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("args,code", [
    (["-c", CONFIGS / "compare.yaml", "--steps", "20"], 0),
    (["-c", CONFIGS / "regression.yaml", "--steps", "20", "--seeds", "2"], 0),
    (["-c", CONFIGS / "regression.yaml", "--steps", "30", "-o", "sgd:lr=5", "-o", "adam:lr=0.01"], 0),
], ids=["three", "seeds", "diverging"])
def test_compare_optimizers(record, width, mode, args, code):
    run = record(width, mode, "compare-optimizers", *args, code=code)
    run.check_fits()
    doc = run.docs["compare_document"]
    may_hide = {"first_loss", "steps_to_10pct", "mean_grad_norm", "mean_update_ratio", "time_s", "steps_per_s"}
    for e in doc["summary"]:
        seeds = len(e["seeds"])
        run.shows(e["label"])
        for key in ("first_loss", "final_loss", "best_loss", "mean_grad_norm", "mean_update_ratio", "time_s",
                    "steps_per_s"):
            if run.column(key, may_hide):
                run.shows(e[key]["mean"])
                if seeds > 1:
                    run.shows(e[key]["std"])
        if run.column("steps_to_10pct", may_hide):
            text = _steps_to_10pct(e["steps_to_10pct"], seeds)
            if text == "never":
                assert "never" in run.text
            else:
                run.shows(e["steps_to_10pct"]["mean"], text)
        for d in e["diverged"]:
            run.shows(f"diverged at step {d['step']}")
            run.shows(d["last_finite_loss"])
    if "-o" in args:
        assert any(e["diverged"] for e in doc["summary"])
        run.shows('-o "sgd:lr=0.5"')


def test_wide_shows_every_column_however_narrow(record):
    run = record(60, "plain", "compare-optimizers", "-c", CONFIGS / "compare.yaml", "--steps", "5", "--wide")
    assert not run.hidden
    header = next(line for line in run.lines if "first_loss" in line)
    assert all(k in header for k in ("label", "time_s", "steps_per_s", "mean_update_ratio"))
    assert cell_len(header) > 60
    run = record(60, "plain", "train", "-c", CONFIGS / "seed.yaml", "--wide")
    header = next(line for line in run.lines if line.startswith("step "))
    assert header.split() == ["step", "epoch", "loss", "grad_norm", "layer1.weight", "layer1.bias", "layer2.weight",
                              "layer2.bias", "lr", "epoch_loss"]


# --------------------------------------------------------------------------- the mechanism itself


def _render(table, width):
    console = Console(record=True, width=width, file=io.StringIO(), highlight=False)
    render_fit.print_blocks(console, [table])
    return console.export_text().splitlines()


def _table(label_text="sgd lr=0.05 momentum=0.9"):
    from backprop_cli.render.fit import Col, FitTable

    t = FitTable("title", [Col("label", align="left"), Col("final_loss", short="final"),
                           Col("steps_per_s", short="steps/s", drop=1), Col("time_s", short="time", drop=2)],
                 plain=True, label=0)
    t.add_row(label_text, "0.096032", "25.262", "12.5")
    t.add_row("adam", "0.064804", "4.8", "0.437")
    return t


@pytest.mark.parametrize("width,header,hidden", [
    (80, ["label", "final_loss", "steps_per_s", "time_s"], []),   # everything, full headers: 50 wide
    (45, ["label", "final", "steps/s", "time"], []),              # abbreviated headers: 43
    (30, ["final", "steps/s", "time"], []),                       # the label on its own line: 26
    (22, ["final", "steps/s"], ["time_s"]),                       # the highest drop goes first
    (18, ["final_loss"], ["steps_per_s", "time_s"]),              # then the next (full headers fit again)
])
def test_fit_gives_way_in_the_documented_order(width, header, hidden):
    lines = _render(_table("sgd lr=0.05 m=0.9"), width)
    assert all(len(line) <= width for line in lines)
    assert lines[1].split() == header
    text = " ".join(" ".join(lines).split())
    for name in hidden:
        assert name in text.split("not shown at this width:")[1]
    if not hidden:
        assert "not shown" not in text
    for number in ("0.096032", "0.064804"):
        assert number in text.split()
    assert any(line.startswith("sgd lr=0.05 m=0.9") for line in lines)  # a label is never cut


def test_stacked_rows_when_even_the_kept_columns_do_not_fit():
    from backprop_cli.render.fit import Col, FitTable

    t = FitTable("", [Col("parameter", align="left"), Col("chain_rule.max_abs"), Col("finite_diff.max_abs")],
                 plain=True, label=0)
    t.add_row("layer1.weight", "3.172e-08", "3.158e-08")
    lines = _render(t, 24)
    assert lines == ["layer1.weight", "  chain_rule.max_abs", "  3.172e-08", "  finite_diff.max_abs", "  3.158e-08"]
    lines = _render(t, 40)
    assert lines == ["layer1.weight", "  chain_rule.max_abs 3.172e-08", "  finite_diff.max_abs 3.158e-08"]
    assert all(len(line) <= 40 for line in lines)


def test_streamed_rows_take_their_width_from_the_widest_value_a_column_can_hold():
    from backprop_cli.render.fit import NUM_WIDTH, fit
    from backprop_cli.render.console import fmt
    from backprop_cli.render.train import train_columns

    cols = train_columns([f"layer{k}.{w}" for k in range(1, 7) for w in ("weight", "bias")], 300,
                         scheduled=False, scale=False, skips=False)
    layout = fit(cols, [], 80)
    assert layout.width <= 80
    shown = [c.name for c in cols if c not in layout.hidden]
    # without evaluation the weights' norms stay longest (the first and last layers first), after epoch
    assert shown == ["step", "loss", "grad_norm", "layer1.weight", "layer2.weight", "layer5.weight", "layer6.weight"]
    assert {"epoch", "epoch_loss", "lr"} <= {c.name for c in layout.hidden}
    assert "lr" in [c.name for c in layout.hidden]  # constant: first to go
    widest = [fmt(-1.2345e-5), fmt(3.4e38), fmt(float("-inf"))]
    assert max(len(w) for w in widest) <= NUM_WIDTH
    line = layout.row(["300"] + [widest[0]] * (len(cols) - 1))[0].plain
    assert len(line) <= 80

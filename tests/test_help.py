"""--help: every example runs, flags take no placeholder, prose is not broken mid-sentence, and an
option means the same in every command that has it."""

import json
import re
import shlex
import shutil

import pytest
import typer.main

from backprop_cli.cli.app import app
from conftest import ROOT

COMMANDS = ["train", "inspect-grads", "check-grads", "explain", "compare-optimizers", "evaluate", "predict", "plot",
            "find-lr", "init", "config show", "config validate", "tune", "graph", "exercise list", "exercise start",
            "exercise check"]
TRAINING = ["train", "compare-optimizers", "inspect-grads"]  # the commands that train


def command(path: str):
    cmd = typer.main.get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    return cmd


def options(path: str) -> dict:
    """The command's options by their first long name."""
    found = {next(o for o in p.opts if o.startswith("--")): p for p in command(path).params
             if p.param_type_name == "option"}
    assert found, path
    return found


def examples(path: str) -> list[str]:
    return [line.strip() for line in (command(path).epilog or "").splitlines() if line.strip().startswith("backprop")]


def test_every_command_has_examples_that_fit_80_columns():
    for path in COMMANDS:
        found = examples(path)
        assert len(found) >= 2, path
        assert any(line.startswith(f"backprop {path} ") or line == f"backprop {path}" for line in found), path
        for line in found:  # another command may make what an example needs (plot: train --metrics)
            assert line.startswith("backprop "), line
            assert len(line) <= 78, f"{line!r} wraps in an 80-column --help"


@pytest.mark.parametrize("path", COMMANDS)
def test_every_example_in_every_help_runs(path, cli, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "docs" / "exercises", tmp_path / "docs" / "exercises")
    monkeypatch.chdir(tmp_path)
    for line in examples(path):
        args, _, redirect = shlex.split(line)[1:], None, None
        if ">" in args:
            at = args.index(">")
            args, redirect = args[:at], args[at + 1]
        r = cli(*args)
        assert r.exit_code == 0, f"{line}\n{r.output[-2000:]}"
        if redirect:
            (tmp_path / redirect).write_text(r.stdout)
            json.loads((tmp_path / redirect).read_text())


@pytest.mark.parametrize("path", COMMANDS + [""])
def test_help_has_no_bool_placeholder_and_no_broken_sentences(path, runner):
    r = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output
    text = command(path).help if path else ""
    for paragraph in (text or "").split("\n\n"):
        assert "\n" not in paragraph, f"{path}: a paragraph broken mid-sentence: {paragraph!r}"
    for p in command(path).params if path else []:
        assert "\n" not in (p.help or ""), (path, p.name)
    assert max(len(line) for line in r.output.splitlines()) <= 80


# Options that share a name but differ on purpose, and why.
EXCEPTIONS = {
    ("config show", "--format"): "yaml or json: a config, not a table",
    ("inspect-grads", "--steps"): "the old spelling of --train-steps",
    ("explain", "--steps"): "the old spelling of --updates",
    ("find-lr", "--steps"): "the length of the sweep, not of a training run",
    ("train", "--plot"): "each command draws its own figure: train the run's dashboard",
    ("find-lr", "--plot"): "the loss against the learning rate",
    ("compare-optimizers", "--plot"): "one curve per optimizer",
    ("tune", "--plot"): "Optuna's optimization history and parameter importances",
    ("plot", "--out"): "the figure it draws (inspect-grads --out: the gradient dump)",
    ("predict", "--out"): "the predictions",
    ("predict", "--format"): "csv or json: predictions, not a table",
    ("evaluate", "--config"): "optional: another config's data for a trained model",
    ("evaluate", "--checkpoint"): "the trained model, required (inspect-grads: optional weights)",
    ("predict", "--checkpoint"): "the trained model, required (inspect-grads: optional weights)",
    ("predict", "--data"): "the rows to predict (evaluate --data: rows with their targets)",
    ("explain", "--config"): "optional: without it, the scalar example",
    ("graph", "--config"): "optional: or --example",
    ("graph", "--out"): "the graph it draws (.dot, .svg, .png)",
    ("graph", "--format"): "dot or json: a graph, not a table",
    ("exercise start", "--out"): "the exercise file it writes",
}


def test_an_option_means_the_same_in_every_command():
    """Same name → same spellings, type, default and help text, wherever it appears."""
    seen: dict = {}
    compared = 0
    for path in [p for p in COMMANDS if p != "exercise list"]:  # exercise list has no options
        for name, opt in options(path).items():
            for alias in opt.opts:
                if (path, alias) in EXCEPTIONS or not alias.startswith("--"):
                    continue
                if alias not in seen:
                    seen[alias] = (path, opt)
                    continue
                first_path, first = seen[alias]
                where = f"{alias}: {first_path} vs {path}"
                assert opt.opts == first.opts and opt.secondary_opts == first.secondary_opts, where
                assert opt.help == first.help, where
                assert opt.is_flag == first.is_flag and opt.default == first.default, where
                assert opt.type_descriptor.annotation == first.type_descriptor.annotation, where
                compared += 1
    assert compared >= 25  # --config, --set, --device, --threads, --format, ... across the commands


def test_the_commands_that_train_share_their_common_options():
    common = {"--config", "--set", "--device", "--threads", "--no-zero-grad", "--wide", "--format"}
    for path in TRAINING:
        assert common <= set(options(path)), (path, common - set(options(path)))
    for path in ("train", "compare-optimizers"):
        assert {"--steps", "--quiet", "--metrics"} <= set(options(path)), path
        assert "-q" in options(path)["--quiet"].opts
    assert "--wide" in options("check-grads") and "--wide" in options("explain")


def test_the_steps_option_means_total_steps_in_train_and_compare(cli, tmp_path):
    from conftest import CONFIGS

    m = tmp_path / "m.jsonl"
    assert cli("train", "-c", CONFIGS / "regression.yaml", "--steps", 7, "--metrics", m, "-q").exit_code == 0
    assert len(m.read_text().splitlines()) == 7
    r = cli("compare-optimizers", "-c", CONFIGS / "regression.yaml", "--steps", 7, "--format", "json")
    assert [len(run["losses"]) for run in json.loads(r.stdout)["runs"]] == [7, 7]


NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.]*\d)")


def _whole(token: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text) is not None


@pytest.mark.parametrize("columns", [60, 80, 100])
@pytest.mark.parametrize("path", COMMANDS + [""])
def test_help_shows_every_option_name_and_every_number_whole(path, columns, runner):
    """A narrow terminal wraps prose between words, never inside an option's name (`--train-steps,--ste…`)
    nor inside a number (`[0<=x<=1125899906842` / `624]`)."""
    r = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns)
    assert r.exit_code == 0, r.output
    assert "…" not in r.output, r.output
    assert max(len(line) for line in r.output.splitlines()) <= columns
    params = command(path).params if path else []
    texts = [command(path).help or ""] if path else []
    for p in params:
        if getattr(p, "hidden", False):
            continue
        for name in p.opts + p.secondary_opts:
            assert _whole(name, r.output), (path, columns, name)
        texts.append(p.help or "")
        if p.param_type_name == "option" and not p.is_flag and p.show_default and p.default is not None:
            texts.append(str(getattr(p.default, "value", p.default)))
        low, high = getattr(p, "min", None), getattr(p, "max", None)
        from backprop_cli.limits import MAX_COUNT

        texts += [str(v) for v in (low, high) if v is not None and v < MAX_COUNT]
    numbers = {n for t in texts for n in NUMBER.findall(t)}
    for n in numbers:  # 20-50: both whole; 0.9; the end of a sentence
        assert re.search(rf"(?<![\w.]){re.escape(n)}(?!\w|\.\d)", r.output), (path, columns, n)
    assert not re.search(r"\d{7,}", r.output), "no bound is a 16-digit number"


def test_bounds_read_as_text():
    from backprop_cli.cli.options import readable_bounds
    from backprop_cli.limits import MAX_COUNT

    assert readable_bounds(0, MAX_COUNT) == "N≥0"
    assert readable_bounds(1, None) == "N≥1"
    assert readable_bounds(1, 1000, "K") == "1≤K≤1000"
    assert readable_bounds(None, None) is None

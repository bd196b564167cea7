"""Config loading and validation: every kind of mistake is reported, with file, line, key and value."""

import json
import textwrap

import pytest

from backprop_cli.config import Config, default_log_every, load_config, to_yaml, validate
from backprop_cli.errors import ConfigError

BASE = textwrap.dedent("""\
    seed: 0
    model:
      input_size: 10
      hidden_size: 20
      output_size: 1
    data:
      kind: synthetic
      samples: 5
      batch_size: 5
    """)


def cfg_file(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path, text, overrides=None):
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file(tmp_path, text), overrides)
    return e.value.problems


def test_minimal_config_gets_torch_defaults(tmp_path):
    cfg = load_config(cfg_file(tmp_path, BASE))
    assert cfg.device == "auto"
    assert cfg.model.activation.name == "relu" and cfg.model.bias is True
    assert cfg.loss.name == "mse"
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 1e-3
    assert cfg.train.steps is None and cfg.train.epochs is None


def test_loss_and_activation_options_default_to_torch(tmp_path):
    import torch

    cfg = load_config(cfg_file(tmp_path, BASE + "loss: huber\n"), ["model.activation=leaky_relu"])
    assert cfg.loss.delta == torch.nn.HuberLoss().delta
    assert cfg.model.activation.negative_slope == torch.nn.LeakyReLU().negative_slope
    cfg = load_config(cfg_file(tmp_path, BASE), ["model.activation=gelu"])
    assert cfg.model.activation.approximate == torch.nn.GELU().approximate == "none"


def test_every_problem_is_reported_at_once_with_line_key_and_value(tmp_path):
    text = BASE.replace("hidden_size: 20", "hidden_size: 20.0").replace("seed: 0", "seed: 0\ndevice: gpu")
    text += "optimizer: {name: adam, lr: 0.1, momentum: 0.9}\ntrain:\n  steps: yes\n  stepz: 3\n"
    out = problems(tmp_path, text)
    path = str(tmp_path / "c.yaml")
    assert f"{path}:2: device: expected auto, cpu, cuda, cuda:N or mps (got gpu)" in out
    assert any(p.startswith(f"{path}:5: model.hidden_size:") and "(got 20.0)" in p for p in out)
    assert any(p.startswith(f"{path}:11: optimizer.momentum: unknown key") and "lr, betas, eps" in p for p in out)
    assert any(p.startswith(f"{path}:13: train.steps:") and "boolean" in p and "(got yes)" in p for p in out)
    assert any(p.startswith(f"{path}:14: train.stepz: unknown key; did you mean steps? allowed keys: steps, epochs") for p in out)
    assert len(out) == 5


@pytest.mark.parametrize("value", ["yes", "true", "3.0", "'3'", "[3]", "{a: 1}", "0", "-2"])
def test_steps_must_be_a_positive_integer(tmp_path, value):
    out = problems(tmp_path, BASE + f"train:\n  steps: {value}\n")
    assert len(out) == 1 and "train.steps" in out[0] and ":11:" in out[0]


def test_string_is_not_a_number_but_yaml_numbers_are(tmp_path):
    out = problems(tmp_path, BASE + "optimizer: {name: sgd, lr: '0.1'}\n")
    assert "optimizer.lr" in out[0] and "(got '0.1')" in out[0]
    for text in ("1e-3", "1.0e-3", "1E-3", "0.001", ".001"):
        cfg = load_config(cfg_file(tmp_path, BASE + f"optimizer: {{name: sgd, lr: {text}}}\n"))
        assert cfg.optimizer.lr == pytest.approx(1e-3)


def test_integer_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = load_config(cfg_file(tmp_path, BASE + "optimizer: {name: sgd, lr: 1}\n"))
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)


def test_duplicate_key_is_an_error_with_both_lines(tmp_path):
    out = problems(tmp_path, BASE + "train:\n  steps: 3\n  steps: 4\n")
    assert out == [f"{tmp_path / 'c.yaml'}:12: train.steps: duplicate key (first given on line 11)"]


def test_duplicate_key_reported_together_with_validation_problems(tmp_path):
    out = problems(tmp_path, BASE + "seed: -1\n")
    assert any("duplicate key" in p for p in out) and any("seed: must be greater than or equal to 0" in p for p in out)


def test_unknown_optimizer_option_lists_the_ones_it_takes(tmp_path):
    out = problems(tmp_path, BASE + "optimizer:\n  name: sgd\n  betas: [0.9, 0.99]\n")
    assert out == [f"{tmp_path / 'c.yaml'}:12: optimizer.betas: unknown key; allowed keys: "
                   "name, lr, momentum, dampening, weight_decay, nesterov, maximize"]


@pytest.mark.parametrize("section,value,expect", [
    ("loss", "huberr", "loss.name: unknown loss; expected one of: mse, l1, huber, smooth_l1, cross_entropy, bce_with_logits"),
    ("optimizer", "sgdd", "optimizer.name: unknown optimizer; expected one of: sgd, adam, adamw, rmsprop, adagrad"),
])
def test_unknown_names_list_the_choices(tmp_path, section, value, expect):
    out = problems(tmp_path, BASE + f"{section}: {value}\n")
    assert len(out) == 1 and expect in out[0] and f"(got '{value}')" in out[0]


def test_unknown_activation_and_data_kind(tmp_path):
    out = problems(tmp_path, BASE.replace("kind: synthetic", "kind: parquet"), ["model.activation=swish"])
    assert any("model.activation.name: unknown activation; expected one of: relu, tanh" in p for p in out)
    assert any(":7: data.kind: unknown data kind; expected one of: synthetic, csv (got parquet)" in p for p in out)


def test_missing_sections_and_keys(tmp_path):
    out = problems(tmp_path, "seed: 1\nmodel: {input_size: 3}\n")
    assert any(p.endswith("model.hidden_size: required key is missing") for p in out)
    assert any(p.endswith("model.output_size: required key is missing") for p in out)
    assert any(p.endswith("data: required key is missing") for p in out)


def test_value_range_checks(tmp_path):
    text = BASE.replace("batch_size: 5", "batch_size: 8") + "optimizer: {name: adam, lr: 0, betas: [0.9, 1.5]}\n"
    out = problems(tmp_path, text)
    assert any("data.batch_size: batch_size is larger than data.samples (5) (got 8)" in p for p in out)
    assert any("optimizer.lr: must be greater than 0 (got 0)" in p for p in out)
    assert any("optimizer.betas.1: must be less than 1 (got 1.5)" in p for p in out)


def test_nesterov_needs_momentum(tmp_path):
    out = problems(tmp_path, BASE + "optimizer: {name: sgd, nesterov: true}\n")
    assert "optimizer.nesterov: nesterov needs momentum > 0" in out[0]


def test_steps_and_epochs_are_exclusive(tmp_path):
    out = problems(tmp_path, BASE + "train: {steps: 3, epochs: 2}\n")
    assert "train.epochs: give train.steps or train.epochs, not both" in out[0]


def test_both_spellings_in_one_place_name_where_each_came_from(tmp_path):
    """issue 22 item 5: file and file, --set and --set, an option and --set are errors naming each key's origin;
    file and command line is an override (the command line's key replaces the file's)."""
    path = cfg_file(tmp_path, BASE + "train:\n  steps: 3\n  epochs: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["optimizer.lr=-1"])
    assert e.value.problems[0] == (f"{path}:12: train.epochs: give train.steps or train.epochs, not both: train.steps "
                                   f"({path}:11) and train.epochs ({path}:12) are both in the file; remove one (an "
                                   "override of one replaces the other) (got 2)")
    assert len(e.value.problems) == 2 and "optimizer.lr" in e.value.problems[1]  # all problems at once
    one = cfg_file(tmp_path, BASE + "train:\n  steps: 3\n")
    cfg = load_config(one, ["train.epochs=2"])  # file and --set: the --set replaces the file's steps
    assert (cfg.train.steps, cfg.train.epochs) == (None, 2)
    out = problems(tmp_path, BASE + "train:\n  steps: 3\n", ["train.epochs=2", "train.steps=4"])
    assert out == ["--set: train.epochs: give train.steps or train.epochs, not both: train.steps (--set "
                   "train.steps=4) and train.epochs (--set train.epochs=2) are both on the command line; give one "
                   "(got 2)"]
    cfg = load_config(cfg_file(tmp_path, BASE), ["model.hidden_sizes=[3, 3]"])  # replaces the file's hidden_size
    assert (cfg.model.hidden_size, cfg.model.hidden_sizes) == (None, [3, 3])
    out = problems(tmp_path, BASE, ["model.hidden_sizes=[3,3]", "model.hidden_size=3"])
    assert out == ["--set: model.hidden_sizes: give model.hidden_size or model.hidden_sizes, not both: "
                   "model.hidden_size (--set model.hidden_size=3) and model.hidden_sizes (--set "
                   "model.hidden_sizes=[3,3]) are both on the command line; give one (got [3,3])"]


def test_an_option_and_a_set_of_the_other_spelling_are_named(tmp_path, cli):
    """--steps stands for --set train.steps=N: with --set train.epochs=M both are on the command line."""
    path = cfg_file(tmp_path, BASE + "train:\n  epochs: 2\n")
    r = cli("train", "-c", path, "--steps", 3, "--set", "train.epochs=2", "-q")
    assert r.exit_code == 2 and r.stderr.strip() == (
        "error: --set: train.epochs: give train.steps or train.epochs, not both: train.steps (--steps 3) and "
        "train.epochs (--set train.epochs=2) are both on the command line; give one (got 2)")
    r = cli("train", "-c", path, "--steps", 3, "-q", "--format", "json")  # the option replaces the file's epochs
    assert r.exit_code == 0 and json.loads(r.stdout)["summary"]["steps"] == 3


def test_loss_must_fit_targets(tmp_path):
    out = problems(tmp_path, BASE + "loss: cross_entropy\n")
    assert any("data.targets: loss cross_entropy needs data.targets: classes" in p for p in out)
    assert any("model.output_size: cross_entropy needs output_size >= 2" in p for p in out)


@pytest.mark.parametrize("text,expect", [
    ("", "the file is empty"),
    ("- 1\n- 2\n", "expected a mapping of config sections at the top level (got a list)"),
    ("model:\n\tinput_size: 3\n", "YAML syntax error"),
    ("model: [1, 2\n", "YAML syntax error"),
])
def test_broken_yaml(tmp_path, text, expect):
    out = problems(tmp_path, text)
    assert len(out) == 1 and expect in out[0] and out[0].startswith(str(tmp_path / "c.yaml"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_unsafe_yaml_tags_are_refused(tmp_path):
    out = problems(tmp_path, BASE + "x: !!python/object/apply:os.system ['echo hacked']\n")
    assert "YAML syntax error" in out[0] and "python/object" in out[0]


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    p = cfg_file(tmp_path, BASE)
    cfg = load_config(p, ["optimizer.lr=0.5", "optimizer.momentum=0.9", "train.steps=7", "model.bias=false",
                          "loss=huber", "loss.delta=2"])
    assert cfg.optimizer.lr == 0.5 and cfg.optimizer.momentum == 0.9 and cfg.train.steps == 7
    assert cfg.model.bias is False and cfg.loss.name == "huber" and cfg.loss.delta == 2.0
    with pytest.raises(ConfigError) as e:
        load_config(p, ["train.steps=many", "optimizer.lr=-1"])
    assert e.value.problems == ["--set: optimizer.lr: must be greater than 0 (got -1)",
                                "--set: train.steps: must be a valid integer (got many)"]
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(p, ["train.steps"])
    with pytest.raises(ConfigError, match="seed is not a mapping"):
        load_config(p, ["seed.x=1"])


def test_show_round_trips(tmp_path):
    cfg = load_config(cfg_file(tmp_path, BASE + "loss: {name: huber, delta: 0.5}\n"), ["optimizer=adam"])
    again = validate(__import__("yaml").safe_load(to_yaml(cfg)))
    assert again.plain() == cfg.plain()
    assert isinstance(again, Config)


@pytest.mark.parametrize("steps,every", [(1, 1), (20, 1), (50, 1), (51, 2), (100, 2), (500, 10), (1000, 20),
                                         (2500, 50), (5000, 100), (100000, 2000)])
def test_default_log_every_prints_20_to_50_rows(steps, every):
    assert default_log_every(steps) == every
    assert steps <= 50 or 20 <= steps / every <= 50


def test_config_show_prints_one_key_per_line_within_80_columns(cli, tmp_path):
    """Block style: each key on its own line, no line past 80 columns (a terminal would wrap it inside
    a word: `on_nonfi` / `nite`), a long list broken between items; and it reads back as the same config."""
    import yaml

    from conftest import CONFIGS

    cols = [f"feature_with_a_long_name_{i}" for i in range(12)]
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(cols + ["y"]) + "\n" + ",".join(["1"] * 13) + "\n")
    wide = tmp_path / "wide.yaml"
    wide.write_text(f"model: {{input_size: 12, hidden_size: 4, output_size: 1}}\n"
                    f"data: {{kind: csv, path: wide.csv, target: y, features: [{', '.join(cols)}]}}\n")
    for path in [*sorted(CONFIGS.glob("*.yaml")), wide]:
        r = cli("config", "show", "-c", path)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, path
        assert not any("{" in line for line in lines), path  # no mapping in flow style
        for key in ("on_nonfinite", "standardize_target", "max_skips", "drop_last"):
            assert sum(line.strip().startswith(f"{key}:") for line in lines) == 1, (path, key)
        shown = yaml.safe_load(r.stdout)
        assert shown == load_config(path).plain(), path
    assert all(c in r.stdout for c in cols)  # each name whole, on some line

"""`backprop init`, --format json everywhere, help texts."""

import json

import pytest
import yaml

from backprop_cli.config import load_config
from conftest import CONFIGS, write


def test_init_writes_a_commented_config_that_validates_and_trains(cli, tmp_path):
    path = tmp_path / "mine.yaml"
    r = cli("init", path)
    assert r.exit_code == 0 and f"wrote {path}" in r.stdout
    text = path.read_text()
    for key in ("seed:", "device:", "precision:", "input_size:", "activation:", "loss:", "optimizer:", "scheduler:",
                "kind: synthetic", "batch_size:", "steps:", "clip_grad_norm:", "on_nonfinite:", "backend:"):
        assert key in text, key
    assert "# relu | tanh | sigmoid | gelu | leaky_relu | identity" in text
    cfg = load_config(path)
    assert cfg.model.activation.name == "relu" and cfg.train.steps == 200
    assert cli("train", "-c", path, "--steps", 3, "-q").exit_code == 0


def test_init_refuses_to_overwrite_unless_forced(cli, tmp_path):
    path = write(tmp_path / "mine.yaml", "keep me\n")
    r = cli("init", path)
    assert r.exit_code == 2 and "already exists; use --force" in r.stderr and path.read_text() == "keep me\n"
    assert cli("init", path, "--force").exit_code == 0 and "keep me" not in path.read_text()


def test_init_from_a_regression_csv(cli, tmp_path):
    path = tmp_path / "sub" / "mine.yaml"
    path.parent.mkdir()
    r = cli("init", path, "--csv", CONFIGS / "data" / "houses.csv", "--target", "price_k")
    assert r.exit_code == 0 and "regression on 'price_k' (standardize_target: true), 4 inputs" in r.stdout
    cfg = load_config(path)
    assert (cfg.model.input_size, cfg.model.output_size, cfg.loss.name) == (None, 1, "mse")
    assert cfg.data.standardize_target and "input_size: auto" in path.read_text()
    assert "# derived from the data: 4 numbers = 4 inputs" in path.read_text()
    assert cfg.data.target == "price_k" and cfg.data.features == ["area_m2", "rooms", "age_years", "distance_km"]
    assert cfg.data_path().resolve() == (CONFIGS / "data" / "houses.csv").resolve()
    assert cli("train", "-c", path, "--steps", 3, "-q").exit_code == 0


def test_init_from_a_classification_csv(cli, tmp_path):
    csv = write(tmp_path / "d.csv", "label,a,b\n" + "".join(f"{i % 3},{i},{i * 2}\n" for i in range(30)))
    path = tmp_path / "c.yaml"
    r = cli("init", path, "--csv", csv, "--target", "label")
    assert r.exit_code == 0 and "classification: 3 classes in 'label'" in r.stdout
    assert "left out as ids (every value different): a" in r.stdout  # 0, 1, ..., 29
    cfg = load_config(path)
    assert (cfg.model.input_size, cfg.model.output_size, cfg.loss.name) == (None, 3, "cross_entropy")
    assert cfg.data.features == ["b"] and not cfg.data.standardize_target
    assert cli("train", "-c", path, "--steps", 3, "-q").exit_code == 0


@pytest.mark.parametrize("args,fragment", [
    (["--csv", "nope.csv"], "nope.csv: no such file"),
    (["--csv", "d.csv", "--target", "zz"], "--target 'zz' is not in the header"),
    (["--csv", "d.csv", "--target", "a"], "d.csv: column 'a' holds text with 1 distinct values: not a class column"),
])
def test_init_bad_csv(cli, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.csv", "a,y\nx,1\n")
    r = cli("init", "c.yaml", *args)
    assert r.exit_code == 2 and fragment in r.stderr and not (tmp_path / "c.yaml").exists()


def test_train_json_is_alone_on_stdout(cli, seed_cfg, tmp_path):
    r = cli("train", "-c", seed_cfg, "--steps", 4, "--format", "json", "--metrics", tmp_path / "m.jsonl")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["status"] == "done" and doc["summary"]["steps"] == 4
    assert set(doc["summary"]) == {"steps", "epochs", "first_loss", "last_loss", "best_loss", "best_step",
                                   "epoch_loss", "wall_time", "steps_per_s", "skipped", "clipped", "warnings"}
    assert doc["outputs"] == {"metrics": str(tmp_path / "m.jsonl")}
    assert "step" in r.stderr and "done:" in r.stderr  # the rows went to stderr


def test_train_json_on_a_nonfinite_stop(cli):
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--set", "optimizer.lr=100", "--format", "json")
    assert r.exit_code == 3
    doc = json.loads(r.stdout)
    assert doc["status"] == "stopped" and doc["summary"]["steps"] == 7


def test_config_show_json_and_validate_json(cli, seed_cfg):
    r = cli("config", "show", "-c", seed_cfg, "--format", "json")
    assert json.loads(r.stdout) == yaml.safe_load(cli("config", "show", "-c", seed_cfg).stdout)
    r = cli("config", "validate", "-c", seed_cfg, "--format", "json")
    assert json.loads(r.stdout) == {"config": str(seed_cfg), "ok": True, "problems": []}
    r = cli("config", "validate", "-c", seed_cfg, "--set", "seed=-1", "--set", "model.bias=3", "--format", "json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["ok"] is False and len(doc["problems"]) == 2


@pytest.mark.parametrize("command", [["train"], ["inspect-grads"], ["check-grads"], ["explain"],
                                     ["compare-optimizers"], ["init"], ["config", "show"], ["config", "validate"]])
def test_every_command_has_help_with_examples(cli, command):
    r = cli(*command, "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.stdout and r.stdout.count("backprop ") >= 3


@pytest.mark.parametrize("command", [["train"], ["inspect-grads"], ["check-grads"], ["explain"],
                                     ["compare-optimizers"], ["config", "validate"]])
def test_every_result_command_takes_format_json(cli, command):
    assert "--format" in cli(*command, "--help").stdout


def test_init_counts_classes_as_distinct_values_and_missing_cells(cli, tmp_path):
    from backprop_cli.config import load_config
    from backprop_cli.data.load import read_table

    csv = write(tmp_path / "d.csv", "\ufeffa,b,label\n" + "".join(f"{i % 7},{'NA' if i % 10 == 0 else i * 2},{1 + i % 3}\n"
                                                               for i in range(60)))
    r = cli("init", tmp_path / "c.yaml", "--csv", csv)
    assert r.exit_code == 2 and "choose the column to predict with --target (columns: a (number, 7 distinct), " \
        "b (number, 54 distinct, 6 missing), label (number, 3 distinct))" in r.stderr
    assert not (tmp_path / "c.yaml").exists()
    r = cli("init", tmp_path / "c.yaml", "--csv", csv, "--target", "label")
    assert r.exit_code == 0, r.output
    assert "3 classes in 'label' (1, 2, 3)" in r.stdout and "60 rows, 6 missing cells (filled" in r.stdout
    text = (tmp_path / "c.yaml").read_text()
    assert '"a": {type: number}' in text and "# 7 distinct, 0 missing; integers: type: category may fit" in text
    assert '"b": {type: number}' in text and "# 54 distinct, 6 missing" in text
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.output_size == 3 and cfg.data.standardize and cfg.data.missing == "auto"
    assert cfg.data.validation == 0.2 and cfg.loss.name == "cross_entropy"
    t = read_table(cfg)
    assert t.classes == ["1", "2", "3"] and t.samples + t.val_samples == 60 and cfg.model.input_size == 2


def test_init_on_penguins_types_text_columns(cli, tmp_path):
    r = cli("init", tmp_path / "p.yaml", "--csv", CONFIGS / "data" / "penguins.csv", "--target", "species")
    assert r.exit_code == 0, r.output
    assert "3 classes in 'species' (Adelie, Chinstrap, Gentoo), 7 inputs (5 numbers, 1 categories, 1 binary: " \
        "9 model inputs), 344 rows, 19 missing cells" in r.stdout
    text = (tmp_path / "p.yaml").read_text()
    assert '"island": {type: category} # 3 distinct, 0 missing' in text
    assert '"sex": {type: binary}      # 2 distinct, 11 missing' in text


def _schema_models(tp, seen=None):
    """Every pydantic model a config may hold, from Config down (union members, lists, optionals)."""
    import typing

    seen = {} if seen is None else seen
    if isinstance(tp, type) and hasattr(tp, "model_fields"):
        if tp in seen:
            return seen
        seen[tp] = None
        for field in tp.model_fields.values():
            _schema_models(field.annotation, seen)
    for arg in typing.get_args(tp):
        _schema_models(arg, seen)
    return seen


def _starters(tmp_path):
    from backprop_cli.runs.starter import starter_config

    csv = write(tmp_path / "d.csv", "label,a,b\n" + "".join(f"{i % 3},{i},{i * 2}\n" for i in range(60)))
    return {"synthetic": starter_config(tmp_path / "s.yaml")[0],
            "regression csv": starter_config(tmp_path / "r.yaml", CONFIGS / "data" / "houses.csv", "price_k")[0],
            "classification csv": starter_config(tmp_path / "c.yaml", csv, "label")[0]}


def test_the_starter_template_names_every_key_of_the_schema(tmp_path):
    """A key added to the schema and forgotten in the starter fails here: each field of each model a
    config may hold (the components' own options too) is named in a starter, as a key or in a comment."""
    import re

    from backprop_cli.config.schema import Config

    text = "\n".join(_starters(tmp_path).values())
    words = set(re.findall(r"[A-Za-z_]+", text))
    models = _schema_models(Config)
    assert len(models) >= 25  # Config, model, 6 activations, 6 losses, 5 optimizers, 4 schedules, ...
    missing = sorted(f"{m.__name__}.{name}" for m in models for name in m.model_fields if name not in words)
    assert not missing, missing


def test_the_starter_marks_every_value_that_is_not_the_default(tmp_path):
    """Each key the starter writes holds the schema's default unless its comment says `chosen (default
    X)`, X being the default: checked against a config given only what has no default, as loaded."""
    from backprop_cli.config import load_text

    for what, text in _starters(tmp_path).items():
        cfg = load_text(text, tmp_path / "x.yaml")
        d = cfg.data
        data = {"kind": d.kind} | ({"path": str(CONFIGS / "data" / "houses.csv"), "target": d.target}
                                     if d.kind == "csv" else {})
        bare = load_text(yaml.safe_dump({"model": {"input_size": 2, "hidden_size": 3, "output_size": 1},
                                         "data": data}), tmp_path / "y.yaml")
        given, default = cfg.model_dump(), bare.model_dump()
        chosen = 0
        section = None
        for line in text.splitlines():
            code, _, comment = line.partition(" # ")
            key, colon, value = code.strip().partition(":")
            if not colon or code.lstrip().startswith("#"):
                continue
            if not line.startswith(" "):
                section = None if value.strip() else key
                if section is not None:
                    continue
            mine = given[section] if section else given
            base = default[section] if section else default
            if key not in mine or key.endswith("_size") or (section == "data" and key in ("path", "target",
                                                                                          "features", "validation",
                                                                                          "missing", "columns")):
                continue
            a, b = mine[key], base[key]
            if section == "optimizer" and key != "name" and given["optimizer"]["name"] != default["optimizer"]["name"]:
                from backprop_cli.config.components import Adam, SGD  # the chosen optimizer's own default

                b = {"adam": Adam, "sgd": SGD}[given["optimizer"]["name"]].model_fields[key].default
            a, b = (x["name"] if isinstance(x, dict) and "name" in x else x for x in (a, b))
            if a == b:
                assert "chosen" not in comment, (what, line)
            else:
                shown = "null" if b is None else yaml.safe_dump(b, default_flow_style=True).strip().removesuffix("...").strip()
                assert comment.startswith(f"chosen (default {shown})"), (what, line, b)
                chosen += 1
        assert chosen >= 2, what  # synthetic: lr 0.01 and steps 200; csv: adam, epochs 50, standardize
    assert "Every key is shown with its default" not in text

"""The `backprop` command through Typer's CliRunner (and a real subprocess where it matters)."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import CONFIGS, ROOT, run_py, write

PARAMS = ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"]


def one_error(result, *fragments):
    """Exit 2, exactly one `error:` line on stderr naming the problem, and no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def test_train_seed_prints_the_run_the_step_row_and_the_summary(cli, seed_cfg):
    r = cli("train", "--config", seed_cfg, "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "\x1b" not in out  # plain when not a terminal
    assert "TwoLayerNet 10 → 20 → 1, relu" in out and "241" in out
    assert "sgd (lr=0.01" in out and "device:     cpu" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("step "))
    assert header.split() == ["step", "epoch", "loss", "grad_norm", *PARAMS, "lr", "epoch_loss"]
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("1 ")]
    from test_engine import plain_classic_run

    _, [(loss, grads)] = plain_classic_run()
    assert rows[0][1] == "1" and rows[0][2] == f"{loss:.5g}" and rows[0][-1] == f"{loss:.5g}"  # one-batch epoch
    assert rows[0][4] == f"{grads['layer1.weight'].norm().item():.5g}"
    assert "done:       1 step(s)" in out and f"first {loss:.5g}" in out


def test_rows_every_log_every_steps_plus_first_and_last(cli, seed_cfg):
    r = cli("train", "-c", seed_cfg, "--steps", 30, "--log-every", 10)
    steps = [int(line.split()[0]) for line in r.stdout.splitlines() if line[:6].strip().isdigit()]
    assert steps == [1, 10, 20, 30]
    r = cli("train", "-c", seed_cfg, "--steps", 1000, "--set", "train.log_every=null")
    steps = [int(line.split()[0]) for line in r.stdout.splitlines() if line[:6].strip().isdigit()]
    assert 20 <= len(steps) <= 52 and steps[-1] == 1000


def test_quiet_prints_only_the_summary(cli, seed_cfg):
    r = cli("train", "-c", seed_cfg, "-q", "--steps", 5)
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].startswith("done:") and len(r.stdout.splitlines()) == 3


def test_metrics_jsonl_has_every_step(cli, seed_cfg, tmp_path):
    path = tmp_path / "m.jsonl"
    r = cli("train", "-c", seed_cfg, "--steps", 4, "--log-every", 2, "--metrics", path, "-q")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [rec["step"] for rec in recs] == [1, 2, 3, 4]
    assert set(recs[2]) == {"step", "epoch", "epoch_loss", "loss", "grad_norm", "grad_norms", "lr", "time"}
    assert recs[0]["epoch_loss"] == recs[0]["loss"]  # the seed data is one batch: each step is an epoch
    # logging steps (the first, every 2nd, the last) also carry the diagnostics
    for rec in (recs[0], recs[1], recs[3]):
        assert set(rec) == {"step", "epoch", "epoch_loss", "loss", "grad_norm", "grad_norms", "lr", "time",
                            "activations", "grad_to_weight", "update_ratios"}
    assert list(recs[0]["grad_norms"]) == PARAMS
    from test_engine import plain_classic_run

    _, ref = plain_classic_run(steps=4)
    assert [rec["loss"] for rec in recs] == pytest.approx([loss for loss, _ in ref], rel=1e-6)
    assert recs[0]["grad_norm"] == pytest.approx(
        sum(g.pow(2).sum() for g in ref[0][1].values()).sqrt().item(), rel=1e-6)


def test_metrics_csv_one_column_per_parameter(cli, seed_cfg, tmp_path):
    path = tmp_path / "m.csv"
    assert cli("train", "-c", seed_cfg, "--steps", 3, "--metrics", path, "-q").exit_code == 0
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == ["step", "epoch", "epoch_loss", "loss", "grad_norm",
                                   *(f"grad_norms.{p}" for p in PARAMS), "lr", "time",
                                   "activations.layer1.mean", "activations.layer1.std",
                                   "activations.layer1.dead_fraction", *(f"grad_to_weight.{p}" for p in PARAMS),
                                   *(f"update_ratios.{p}" for p in PARAMS)]
    assert len(lines) == 4 and lines[3].startswith("3,")
    from backprop_cli.io.metrics_read import read_metrics

    jl = tmp_path / "m.jsonl"
    cli("train", "-c", seed_cfg, "--steps", 3, "--metrics", jl, "-q")
    a, b = read_metrics(path), read_metrics(jl)
    assert [x["loss"] for x in a] == [x["loss"] for x in b]


def test_save_writes_a_plain_checkpoint(cli, seed_cfg, tmp_path):
    path = tmp_path / "final.pt"
    r = cli("train", "-c", seed_cfg, "--steps", 3, "--save", path, "-q")
    assert r.exit_code == 0, r.output
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "step", "config"} <= set(state)
    assert state["step"] == 3 and list(state["model"]) == PARAMS
    assert state["config"]["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.0, "dampening": 0.0,
                                            "weight_decay": 0.0, "nesterov": False, "maximize": False}
    from test_engine import plain_classic_run

    model, _ = plain_classic_run(steps=3)
    for name, p in model.named_parameters():
        assert torch.equal(state["model"][name], p.detach())
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("args,fragments", [
    (["--config", "missing.yaml"], ["missing.yaml: no such file"]),
    (["--device", "cuda"], ["device: 'cuda' is not available"]),
    (["--metrics", "m.txt"], ["metrics file must end in .jsonl or .csv"]),
    (["--metrics", "nodir/m.jsonl"], ["folder 'nodir' does not exist"]),
    (["--save", "nodir/c.pt"], ["folder 'nodir' does not exist"]),
    (["--set", "optimizer.lr=0"], ["--set: optimizer.lr: must be greater than 0 (got 0)"]),
])
def test_bad_input_is_one_line_and_exit_2(cli, seed_cfg, tmp_path, monkeypatch, args, fragments):
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)
    if "--config" not in args:
        args = ["--config", seed_cfg] + args
    one_error(cli("train", *args), *fragments)


def test_every_config_problem_printed_on_its_own_line(cli, tmp_path):
    bad = write(tmp_path / "bad.yaml", "model: {input_size: 0, hidden_size: x, output_size: 1}\n"
                                       "data: {kind: synthetic}\nfoo: 1\n")
    r = cli("train", "-c", bad)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"error: {bad}:") for line in lines)
    assert "Traceback" not in r.output


def test_bad_csv_is_one_line(cli, tmp_path):
    write(tmp_path / "d.csv", "a,y\n1,2\n3,oops\n")
    cfg = write(tmp_path / "c.yaml", "model: {input_size: 1, hidden_size: 2, output_size: 1}\n"
                                     "data: {kind: csv, path: d.csv, target: y, batch_size: 1}\n")
    one_error(cli("train", "-c", cfg), "d.csv:3: column 'y': not a number (got 'oops')")


def test_failure_leaves_existing_outputs_untouched(cli, tmp_path):
    write(tmp_path / "d.csv", "a,y\n1,2\n3,oops\n")
    cfg = write(tmp_path / "c.yaml", "model: {input_size: 1, hidden_size: 2, output_size: 1}\n"
                                     "data: {kind: csv, path: d.csv, target: y, batch_size: 1}\n")
    old = write(tmp_path / "m.jsonl", "previous run\n")
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"old checkpoint")
    r = cli("train", "-c", cfg, "--metrics", old, "--save", ck)
    assert r.exit_code == 2
    assert old.read_text() == "previous run\n" and ck.read_bytes() == b"old checkpoint"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.pt", "c.yaml", "d.csv", "m.jsonl"]


def test_config_show_and_validate(cli, seed_cfg):
    r = cli("config", "show", "-c", seed_cfg, "--set", "optimizer.lr=0.5")
    assert r.exit_code == 0
    import yaml

    shown = yaml.safe_load(r.stdout)
    assert shown["optimizer"]["lr"] == 0.5 and shown["model"]["activation"] == {"name": "relu"}
    assert shown["loss"] == {"name": "mse", "reduction": "mean"}
    r = cli("config", "validate", "-c", seed_cfg)
    assert r.exit_code == 0 and "ok" in r.stdout
    one_error(cli("config", "validate", "-c", seed_cfg, "--set", "model.activation=swish"), "unknown activation")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_runs(cli, name):
    r = cli("train", "-c", CONFIGS / name, "--steps", 3, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "done:       3 step(s)" in r.stdout


def test_shipped_configs_open_with_the_command_that_runs_them():
    for path in CONFIGS.glob("*.yaml"):
        head = path.read_text().splitlines()[:3]
        assert any(line.startswith("#") and f"backprop " in line and f"configs/{path.name}" in line
                   for line in head), path


def test_help_does_not_import_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom backprop_cli.cli.app import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "assert 'train' in r.output\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic', 'numpy'))\n"
            "print(bad)\nassert not bad")
    res = run_py(code)
    assert res.returncode == 0, res.stdout + res.stderr


def test_python_dash_m_and_version():
    res = subprocess.run([sys.executable, "-m", "backprop_cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0 and res.stdout.startswith("backprop ")


def test_no_color_env_gives_plain_output_even_on_a_terminal(monkeypatch):
    from backprop_cli.render.console import plain_output

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert plain_output(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert plain_output(Tty()) is True


def test_output_files_get_ordinary_permissions(cli, seed_cfg, tmp_path):
    import os

    path = tmp_path / "m.jsonl"
    old = os.umask(0o022)
    try:
        assert cli("train", "-c", seed_cfg, "--metrics", path, "-q").exit_code == 0
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_terminal_sees_a_line_while_torch_loads_and_plain_output_does_not(monkeypatch):
    """On a terminal, `train` shows a transient line (the run in a few words) from the moment the
    config is read until the start panel replaces it; plain output never gets it."""
    import io

    from rich.console import Console

    from backprop_cli.config import load_config, start_summary
    from backprop_cli.render.train import TrainReport

    text = start_summary(load_config(CONFIGS / "seed.yaml"))  # no torch needed
    assert text == "10 → 20 → 1 relu · mse · sgd lr=0.01 · 5 samples · 1 step"
    started = []
    monkeypatch.setattr("rich.status.Status.start", lambda self: started.append(self))
    terminal = TrainReport(Console(file=io.StringIO(), force_terminal=True, width=80), plain=False)
    with terminal.starting(text) as waiting:
        assert started and waiting.status is started[0]
        assert str(started[0].renderable.text).startswith("backprop train: loading torch … 10 → 20 → 1 relu")
        from backprop_cli.core.build import build_run, describe_run

        terminal.start(describe_run(build_run(load_config(CONFIGS / "seed.yaml", ["device=cpu"]))), 1)
        assert waiting.status is None  # the start panel replaced it
        assert "backprop train" in terminal.console.file.getvalue()
    for plain, quiet in ((True, False), (False, True)):
        report = TrainReport(Console(file=io.StringIO(), force_terminal=not plain), plain=plain, quiet=quiet)
        with report.starting(text) as waiting:
            assert waiting.status is None
    assert len(started) == 1


def test_a_typo_in_set_is_blamed_on_set_not_on_the_file(cli, seed_cfg):
    r = cli("train", "-c", seed_cfg, "--set", "optimzer.lr=0.1")
    line = one_error(r, "--set: optimzer: unknown key; did you mean optimizer?")
    assert str(seed_cfg) not in line and "seed.yaml" not in line
    r = cli("train", "-c", seed_cfg, "--set", "optimizer.lrr=0.1")
    one_error(r, "--set: optimizer.lrr: unknown key; did you mean lr?")


@pytest.mark.parametrize("args,status,reason,code", [
    (["--set", "optimizer.lr=100"], "stopped", "non-finite value", 3),
    (["--set", "optimizer.lr=100", "--detect-anomaly"], "stopped", "non-finite value (autograd anomaly)", 3),
    ([], "done", None, 0),
])
def test_train_json_says_why_it_stopped(cli, args, status, reason, code):
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--steps", 20, *args, "--format", "json")
    assert r.exit_code == code, r.output
    doc = json.loads(r.stdout)
    assert doc["status"] == status and doc.get("reason") == reason
    assert ("reason" in doc) == (status != "done")


def test_train_json_reason_for_an_output_that_fails(cli, tmp_path, monkeypatch):
    from backprop_cli.runs import sinks
    from backprop_cli.errors import OutputError

    def full(self, rec):
        if rec.step == 3:
            raise OutputError("m.jsonl: cannot write: No space left on device")
        self.writer.write(rec.as_dict())

    monkeypatch.setattr(sinks.MetricsSink, "record", full)
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--steps", 9, "--metrics", tmp_path / "m.jsonl",
            "--format", "json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert (doc["status"], doc["reason"], doc["summary"]["steps"]) == ("stopped", "output error", 3)


def test_train_json_reason_for_a_signal(tmp_path):
    import os
    import signal

    cmd = [sys.executable, "-m", "backprop_cli", "train", "-c", str(CONFIGS / "regression.yaml"), "--steps",
           "1000000", "--log-every", "1", "--format", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:  # --format json: the rows go to stderr
        if line.strip().startswith("20 "):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    doc = json.loads(out)
    assert doc["status"] == "interrupted" and doc["reason"] == "signal (SIGINT)"


@pytest.mark.parametrize("extra", [[], ["--format", "json"]])
def test_a_closed_stdout_ends_quietly_with_141_and_keeps_the_outputs(tmp_path, extra):
    """`backprop train ... | head -3`: the reader goes away; the run stops after that step, writes
    its files, prints nothing more and exits with 141 (128 + SIGPIPE), as a shell reports it."""
    m = tmp_path / "m.jsonl"
    stream = "stderr" if extra else "stdout"
    cmd = ["bash", "-c", f"{sys.executable} -m backprop_cli train -c {CONFIGS / 'regression.yaml'} --steps 1000000 "
           f"--log-every 1 --metrics {m} {' '.join(extra)} {'2>&1 >/dev/null' if extra else ''} | head -3; "
           "echo \"exit=${PIPESTATUS[0]}\" >&2"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert len(r.stdout.splitlines()) == 3, r.stdout
    assert r.stderr.strip() == "exit=141", f"{stream}: {r.stderr}"
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert [x["step"] for x in recs] == list(range(1, len(recs) + 1)) and recs


def test_a_closed_stderr_still_gets_the_json_out(tmp_path):
    """--format json with its rows (stderr) piped into head: the JSON on stdout still says what happened."""
    out = tmp_path / "out.json"
    cmd = ["bash", "-c", f"{sys.executable} -m backprop_cli train -c {CONFIGS / 'regression.yaml'} --steps 1000000 "
           f"--log-every 1 --format json 2>&1 >{out} | head -3 >/dev/null; echo \"exit=${{PIPESTATUS[0]}}\" >&2"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stderr.strip() == "exit=141", r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "stopped" and doc["reason"] == "output closed" and doc["summary"]["steps"] >= 1


def test_a_closed_stdout_in_a_command_that_prints_once(tmp_path):
    # 3000 rows: far more than a pipe holds, so the writes meet the closed pipe
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m backprop_cli explain --updates 3000 | head -1; "
                                      "echo \"exit=${PIPESTATUS[0]}\" >&2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert len(r.stdout.splitlines()) == 1
    assert r.stderr.strip() == "exit=141", r.stderr

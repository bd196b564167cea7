"""backprop tune: the tune: section's validation, trials as train's runs (the best config and the --set
line reproduce the best value exactly), storages (SQLite, journal with 2 workers, a real PostgreSQL
server), pruning, failed trials, determinism, Ctrl-C, the JSON document and bad input."""

import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import CONFIGS, ROOT

optuna = pytest.importorskip("optuna")

PENGUINS = CONFIGS / "data" / "penguins.csv"


def tiny(tmp_path, tune, *, name="t.yaml", epochs=3, extra="", loss="cross_entropy", validation="0.2"):
    """A small penguins classification config with the given tune: section (YAML, indented 2)."""
    text = textwrap.dedent(f"""\
        seed: 0
        device: cpu
        model: {{input_size: 4, hidden_size: 4, output_size: 3}}
        loss: {loss}
        optimizer: {{name: adam, lr: 0.01}}
        data:
          kind: csv
          path: {json.dumps(str(PENGUINS))}
          target: species
          features: [bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g]
          missing: drop_rows
          validation: {validation}
          standardize: true
          batch_size: 32
        train: {{epochs: {epochs}}}
        """) + extra + "tune:\n" + textwrap.indent(textwrap.dedent(tune), "  ")
    path = tmp_path / name
    path.write_text(text)
    return path


SPACE = """\
trials: 4
space:
  optimizer.lr: {low: 1.0e-3, high: 0.3, log: true}
  model.hidden_size: {choices: [2, 4, 8]}
"""


def run(args, cwd, **kw):
    """The command in its own process (workers are processes too)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "backprop_cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240, **kw)


def train_val(cli, config, *sets, key="loss"):
    args = ["train", "-c", config, "-q", "--format", "json"]
    for s in sets:
        args += ["--set", s]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["summary"]["validation"][key]


# --------------------------------------------------------------------------- the config section


def test_every_problem_of_the_space_at_once_with_its_line(cli, tmp_path):
    cfg = tiny(tmp_path, """\
        sampler: grid
        space:
          optimizer.lrr: {low: 1.0e-4, high: 0.1}
          optimizer.lr: {low: -1, high: 0.1, step: 0.1}
          model.hidden_size: {choices: [8, 16, 0.5]}
          data.batch_size: {low: 0, high: 64, step: 8}
          model.activation: {choices: [relu, tanh, nope]}
          optimizer.betas.0: {low: 0.5, high: 0.99}
        """)
    r = cli("config", "validate", "-c", cfg)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: {cfg}:19: tune.space.optimizer.lrr: not a key of this config; did you mean optimizer.lr?",
        f"error: {cfg}:20: tune.space.optimizer.lr.low: the config refuses it: optimizer.lr: must be greater than 0 "
        "(got -1)",
        f"error: {cfg}:21: tune.space.model.hidden_size.choices.2: the config refuses it: model.hidden_size: must be a "
        "valid integer, not a float (got 0.5)",
        f"error: {cfg}:22: tune.space.data.batch_size.low: the config refuses it: data.batch_size: must be greater "
        "than 0 (got 0)",
        f"error: {cfg}:23: tune.space.model.activation.choices.2: the config refuses it: model.activation.name: "
        "unknown activation; expected one of: relu, tanh, sigmoid, gelu, leaky_relu, identity (got 'nope')",
        f"error: {cfg}:24: tune.space.optimizer.betas.0: sampler grid needs choices, integer bounds or a step for "
        "every key",
    ]


def test_the_section_own_checks(cli, tmp_path):
    cfg = tiny(tmp_path, """\
        trials: 0
        space:
          optimizer.lr: {low: 0, high: 0.1, log: true}
          model.hidden_size: {choices: [8, "16"]}
          train.epochs: {low: 5, high: 5}
          data.batch_size: {low: 8, high: 60, step: 8}
          optimizer.eps: {low: 1.0e-9, high: 1.0e-7, choices: [1.0e-8]}
        """)
    r = cli("config", "validate", "-c", cfg)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: {cfg}:17: tune.trials: must be greater than 0 (got 0)",
        f"error: {cfg}:19: tune.space.optimizer.lr.low: a log range needs low > 0 (got 0)",
        f"error: {cfg}:20: tune.space.model.hidden_size.choices: choices of mixed types (number, string): give values "
        "of one type (got [8, '16'])",
        f"error: {cfg}:21: tune.space.train.epochs.high: must be greater than low (5) (got 5)",
        f"error: {cfg}:22: tune.space.data.batch_size.high: high - low must be a whole number of steps (8) (got 60)",
        f"error: {cfg}:23: tune.space.optimizer.eps.low: give choices, or a range (low, high, log, step), not both "
        "(got 1.0e-9)",
        f"error: {cfg}:23: tune.space.optimizer.eps.high: give choices, or a range (low, high, log, step), not both "
        "(got 1.0e-7)",
    ]


def test_set_reaches_a_field_of_a_space_entry_keyed_by_a_dotted_path(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE + "  optimizer.betas.0: {low: 0.8, high: 0.95}\n")

    def space(*sets):
        args = ["config", "show", "-c", cfg, "--format", "json"]
        for s in sets:
            args += ["--set", s]
        r = cli(*args)
        assert r.exit_code == 0, r.output
        return {k: {f: v for f, v in e.items() if v is not None and v is not False}
                for k, e in json.loads(r.stdout)["tune"]["space"].items()}

    before = space()
    assert before["optimizer.lr"] == {"low": 1.0e-3, "high": 0.3, "log": True}
    after = space("tune.space.optimizer.lr.low=0.01", "tune.space.model.hidden_size.choices.1=16",
                  "tune.space.optimizer.betas.0.high=0.9", "tune.space.optimizer.weight_decay.low=0",
                  "tune.space.optimizer.weight_decay.high=0.1", "tune.space.data.batch_size={choices: [8, 16]}")
    assert after == {
        "optimizer.lr": {"low": 0.01, "high": 0.3, "log": True},
        "model.hidden_size": {"choices": [2, 16, 8]},
        "optimizer.betas.0": {"low": 0.8, "high": 0.9},
        "optimizer.weight_decay": {"low": 0, "high": 0.1},
        "data.batch_size": {"choices": [8, 16]},
    }
    r = cli("config", "validate", "-c", cfg, "--set", "tune.space.optimizer.lr.low=-1")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: --set: tune.space.optimizer.lr.low: a log range needs low > 0 (got -1)"]


def test_tune_needs_validation_data_a_metric_of_the_task_and_something_to_search(cli, tmp_path):
    cfg = tiny(tmp_path, "metric: val_r2\nspace: {optimizer.lr: {low: 0.001, high: 0.1}}\n", validation="null")
    r = cli("config", "validate", "-c", cfg)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: {cfg}:16: tune: tune needs validation data (each trial's value is a validation metric): set "
        "data.validation to a fraction (e.g. 0.2) or a CSV file",
        f"error: {cfg}:17: tune.metric: val_r2 is a regression metric and loss cross_entropy is classification; "
        "expected one of: val_loss, val_accuracy, val_f1_macro (got val_r2)",
    ]
    empty = tiny(tmp_path, "space: {}\n", name="e.yaml")
    r = cli("config", "validate", "-c", empty)
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"error: {empty}:17: tune.space: nothing to search: give at least one key, e.g. "
                                "optimizer.lr: {low: 1.0e-4, high: 0.1, log: true} (got {})")
    none = tiny(tmp_path, SPACE, name="n.yaml")
    none.write_text(none.read_text().split("tune:")[0])
    r = cli("tune", "-c", none)
    assert r.exit_code == 2 and r.stderr.count("error: ") == 1 and "no tune: section" in r.stderr


# --------------------------------------------------------------------------- trials are train's runs


def test_the_best_config_and_the_set_line_reproduce_the_best_value_exactly(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE, epochs=5)
    out = tmp_path / "out" / "best.yaml"
    out.parent.mkdir()
    r = cli("tune", "-c", cfg, "--save-best-config", out, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d) == {"study", "storage", "metric", "direction", "best", "trials"}
    assert (d["study"], d["metric"], d["direction"]) == ("t", "val_loss", "minimize")
    assert d["storage"] == str(tmp_path / "t.db") and (tmp_path / "t.db").exists()
    assert [t["number"] for t in d["trials"]] == [0, 1, 2, 3]
    for t in d["trials"]:
        assert set(t) == {"number", "state", "value", "params", "duration_s"}
        assert set(t["params"]) == {"optimizer.lr", "model.hidden_size"}
        assert t["state"] in ("complete", "pruned") and t["duration_s"] > 0
    done = [t for t in d["trials"] if t["state"] == "complete"]
    best = min(done, key=lambda t: t["value"])
    assert d["best"] == {"number": best["number"], "value": best["value"], "params": best["params"]}
    # the saved config, trained alone, gives the best trial's value to the last bit; so does the --set line
    saved = out.read_text()
    assert "tune" not in __import__("yaml").safe_load(saved) and "its tune: section is removed" in saved
    assert train_val(cli, out) == best["value"]
    p = best["params"]
    assert train_val(cli, cfg, f"optimizer.lr={p['optimizer.lr']!r}", f"model.hidden_size={p['model.hidden_size']}") \
        == best["value"]
    # and no worse than the untuned config (lr 0.01, width 4)
    assert best["value"] <= train_val(cli, cfg)
    # every complete trial's value is its run's last evaluation, as reported to the pruner
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert t.intermediate_values[max(t.intermediate_values)] == t.value
    # the table says the same, with the line that reproduces it
    r = cli("tune", "-c", cfg, "--trials", "1")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"study t in {tmp_path / 't.db'} (SQLite, beside the config): 4 trial(s) so far, 1 more"
    assert "trials:      5 in the study" in r.stdout
    assert f"backprop train --config {cfg} --set optimizer.lr=" in r.stdout


def test_the_same_seed_gives_the_same_trials_and_set_tune_trials_works(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE)

    def trials(storage, *extra):
        r = cli("tune", "-c", cfg, "--storage", storage, "--set", "tune.trials=3", "--format", "json", *extra)
        assert r.exit_code == 0, r.output
        return [(t["params"], t["value"], t["state"]) for t in json.loads(r.stdout)["trials"]]

    first = trials(tmp_path / "a.db")
    assert len(first) == 3 and len({json.dumps(p, sort_keys=True) for p, _, _ in first}) == 3
    assert trials(tmp_path / "b.db") == first  # a fresh study: the same trials in the same order
    # a continued study samples on (its sampler seeded from seed and the trials already there): its next
    # trials are new points, not the first ones again
    more = trials(tmp_path / "a.db")
    assert more[:3] == first and len(more) == 6 and all(p not in [q for q, _, _ in first] for p, _, _ in more[3:])


def test_a_diverged_trial_fails_with_its_reason_and_the_study_goes_on(cli, tmp_path):
    cfg = tiny(tmp_path, """\
        sampler: grid
        pruner: none
        trials: 5
        space:
          optimizer.lr: {choices: [1.0e+30, 0.01]}
        """, extra="")
    cfg.write_text(cfg.read_text().replace("optimizer: {name: adam, lr: 0.01}", "optimizer: {name: sgd, lr: 0.01}"))
    r = cli("tune", "-c", cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    states = {t["params"]["optimizer.lr"]: t["state"] for t in d["trials"]}
    assert states == {1e30: "failed", 0.01: "complete"}  # the grid has 2 points: the study stops there
    assert d["best"]["params"] == {"optimizer.lr": 0.01}
    assert "failed: diverged: " in r.stderr and "non-finite" in r.stderr


def test_pruned_trials_stop_at_an_evaluation_worse_than_the_median(cli, tmp_path):
    cfg = tiny(tmp_path, """\
        trials: 12
        sampler: random
        space:
          optimizer.lr: {low: 1.0e-5, high: 0.3, log: true}
        """, epochs=6)
    r = cli("tune", "-c", cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "with lr down to 1e-5, some trials fall behind the median"
    for t in pruned:
        step = max(t.intermediate_values)
        assert t.user_attrs["pruned_at"].endswith(f"(step {step})")
        earlier = [c.intermediate_values[step] for c in study.trials if c.state.name == "COMPLETE"
                   and c.datetime_complete < t.datetime_complete and step in c.intermediate_values]
        import statistics

        assert t.intermediate_values[step] > statistics.median(earlier)  # MedianPruner's rule
        assert f"pruned at {t.user_attrs['pruned_at']}" in r.stderr


def test_direction_follows_the_metric_and_a_study_keeps_its_own(cli, tmp_path):
    cfg = tiny(tmp_path, "metric: val_accuracy\n" + SPACE.replace("trials: 4", "trials: 2"))
    r = cli("tune", "-c", cfg, "--format", "json")
    d = json.loads(r.stdout)
    assert (d["metric"], d["direction"]) == ("val_accuracy", "maximize")
    assert d["best"]["value"] == max(t["value"] for t in d["trials"] if t["state"] == "complete")
    r = cli("tune", "-c", cfg, "--set", "tune.metric=val_loss")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"error: --study t: exists in {tmp_path / 't.db'} with metric val_accuracy (maximize); "
                                "this config searches val_loss (minimize): give another --study (or --storage)")
    r = cli("tune", "-c", cfg, "--set", "tune.metric=val_f1_macro", "--study", "f1", "--trials", "1", "--format", "json")
    d = json.loads(r.stdout)
    assert d["direction"] == "maximize" and d["trials"][0]["value"] is not None
    # f1_macro: the mean F1 of the classes, as train's own per-class table has it
    p = d["trials"][0]["params"]
    rt = cli("train", "-c", cfg, "-q", "--format", "json", "--set", f"optimizer.lr={p['optimizer.lr']!r}",
             "--set", f"model.hidden_size={p['model.hidden_size']}")
    per = json.loads(rt.stdout)["summary"]["validation"]["per_class"]
    assert d["trials"][0]["value"] == sum(c["f1"] for c in per) / len(per)


def test_timeout_starts_no_trial_after_it_with_hyperband_pruning(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 50"))
    r = cli("tune", "-c", cfg, "--timeout", "0.01", "--set", "tune.pruner=hyperband", "--format", "json")
    assert r.exit_code == 0, r.output
    assert [t["state"] for t in json.loads(r.stdout)["trials"]] == ["complete"]  # the first trial, then time is up


def test_plot_draws_the_history_and_the_importances(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 3"))
    r = cli("tune", "-c", cfg, "--plot", tmp_path / "t.png", "--set", "tune.pruner=none")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot:        wrote {tmp_path / 't.png'}\n" in r.stdout  # both panels: no note
    import matplotlib.image

    h, w = matplotlib.image.imread(tmp_path / "t.png").shape[:2]
    assert w > 2 * h  # two panels side by side


# --------------------------------------------------------------------------- storages and workers


def test_two_workers_on_a_journal_record_exactly_12_trials_each_reproducible_alone(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 12"))
    r = run(["tune", "-c", cfg, "--workers", 2, "--storage", tmp_path / "s.journal", "--format", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(t["number"] for t in d["trials"]) == list(range(12))
    assert r.stderr.splitlines()[0].startswith(f"study t in {tmp_path / 's.journal'} (journal file")
    assert len({json.dumps(t["params"], sort_keys=True) for t in d["trials"]}) == 12
    one = next(t for t in d["trials"] if t["state"] == "complete" and t["number"] != d["best"]["number"])
    p = one["params"]
    assert train_val(cli, cfg, f"optimizer.lr={p['optimizer.lr']!r}",
                     f"model.hidden_size={p['model.hidden_size']}") == one["value"]
    # one worker continues the journal
    r = cli("tune", "-c", cfg, "--trials", 1, "--storage", tmp_path / "s.journal", "--format", "json")
    assert [t["number"] for t in json.loads(r.stdout)["trials"]] == list(range(13))


def test_the_default_storage_is_beside_the_config_named_after_the_study(tmp_path):
    from backprop_cli.runs.tune_storage import resolve_storage

    cfg = tmp_path / "p.yaml"
    one = resolve_storage(None, cfg, "p", 1)
    assert (one.kind, one.target, one.describe()) == ("rdb", f"sqlite:///{tmp_path / 'p.db'}",
                                                      f"{tmp_path / 'p.db'} (SQLite, beside the config)")
    two = resolve_storage(None, cfg, "p", 2)  # SQLite is not safe for concurrent writers: a journal file
    assert (two.kind, two.target) == ("journal", str(tmp_path / "p.journal"))
    (tmp_path / "p.journal").write_text("")  # a study that several workers began: one worker continues it
    assert resolve_storage(None, cfg, "p", 1).target == str(tmp_path / "p.journal")
    assert resolve_storage("x.sqlite", cfg, "p", 1).target == f"sqlite:///{Path('x.sqlite').resolve()}"
    assert resolve_storage("runs/x.log", cfg, "p", 1).kind == "journal"


def test_ctrl_c_stops_after_the_running_trial_is_recorded_and_the_study_resumes(tmp_path, cli):
    # trials of a second or more, so that the signal, 0.5 s after a trial's row, lands inside the next one
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 50"), epochs=150)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "backprop_cli", "tune", "-c", str(cfg), "--set",
                             "tune.pruner=none"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the first trial's row: the second is running
        if line.startswith("    0 "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == ("error: interrupted by SIGINT: the running trials were recorded; run "
                                            "tune again to go on")
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert study.trials and not [t for t in study.trials if t.state.name == "RUNNING"]
    last = study.trials[-1]
    assert last.state.name == "FAIL" and last.user_attrs["reason"].startswith("interrupted by SIGINT after step")
    assert "failed: interrupted by SIGINT after step" in out
    assert len(study.trials) >= 2 and study.trials[0].state.name == "COMPLETE"
    recorded = len(study.trials)  # (study.trials reads the storage each time)
    r = cli("tune", "-c", cfg, "--trials", 1, "--set", "train.epochs=2", "--format", "json")
    assert r.exit_code == 0, r.output
    assert [t["number"] for t in json.loads(r.stdout)["trials"]] == list(range(recorded + 1)), r.stderr


def test_bad_storage_and_workers_are_one_line_with_the_password_masked(cli, tmp_path):
    cfg = tiny(tmp_path, SPACE)
    cases = {
        ("--storage", "foo://u:hunter2@h/db"): "error: --storage foo://u:***@h/db: unknown scheme 'foo'; expected an "
        "Optuna storage URL (postgresql://, mysql://, sqlite:///) or the path of a journal file",
        ("--storage", f"postgresql://u:hunter2@/db?host={tmp_path}&port=1"): "error: --storage postgresql://u:***@/db",
        ("--workers", "33"): "error: --workers 33: between 1 and 32 worker processes on one machine",
        ("--workers", "2", "--storage", "x.db"): "error: --workers 2 with the SQLite storage x.db: SQLite is not safe",
        ("--study", "a/b"): "error: --study a/b: a study name is 1-100 letters",
        ("--storage", tmp_path / "nope" / "s.journal"): f"error: --storage {tmp_path / 'nope' / 's.journal'}: folder",
    }
    for args, start in cases.items():
        r = cli("tune", "-c", cfg, *args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(start), (args, r.stderr)
        assert "hunter2" not in r.output
    assert "cannot reach the storage" in cli("tune", "-c", cfg, "--storage",
                                             f"postgresql://u:hunter2@/db?host={tmp_path}&port=1").stderr
    assert not list(tmp_path.glob("*.db"))  # nothing written


# --------------------------------------------------------------------------- PostgreSQL, a real server


def _pg_bin():
    found = shutil.which("initdb")
    dirs = ([str(Path(found).resolve().parent)] if found else []) + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                                           reverse=True)
    for d in dirs:
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


@pytest.fixture
def postgres():
    """A PostgreSQL server of our own: initdb and pg_ctl in a temporary folder, on a Unix socket only, run by
    an unprivileged user (the postgres account, or one made here, when the tests run as root)."""
    pytest.importorskip("psycopg2")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    user = None
    if os.geteuid() == 0:
        import pwd

        for name in ("postgres", "backprop-pg"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if user is None:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "backprop-pg"],
                           check=True)
            user = pwd.getpwnam("backprop-pg")
    folder = Path(tempfile.mkdtemp(prefix="backprop-pg-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user is not None else {}
    with socket.socket() as s:  # a port number nobody uses (the server listens on no TCP port: the socket's name)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "HOME": str(folder)}
    subprocess.run([f"{bin_dir}/initdb", "-D", str(data), "-U", "tuner", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True, env=env, cwd=folder, **as_user)
    opts = f"-k {folder} -c listen_addresses='' -p {port} -c fsync=off"
    subprocess.run([f"{bin_dir}/pg_ctl", "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"],
                   check=True, capture_output=True, env=env, cwd=folder, **as_user)
    try:
        yield f"postgresql://tuner:pw@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       env=env, cwd=folder, **as_user)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_sharing_a_postgresql_storage_record_exactly_n_trials(postgres, tmp_path, cli):
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 6"))
    r = run(["tune", "-c", cfg, "--workers", 2, "--storage", postgres, "--study", "pg", "--format", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(t["number"] for t in d["trials"]) == list(range(6))
    assert d["storage"].startswith("postgresql://tuner:***@/postgres") and "pw@" not in r.stdout + r.stderr
    assert r.stderr.splitlines()[0].startswith("study pg in postgresql://tuner:***@")
    # another tune (another machine's) joins the same study: its trials are numbered on
    r = cli("tune", "-c", cfg, "--storage", postgres, "--study", "pg", "--trials", 1, "--format", "json")
    assert r.exit_code == 0, r.output
    assert sorted(t["number"] for t in json.loads(r.stdout)["trials"]) == list(range(7))


# --------------------------------------------------------------------------- docs/tune.md


def test_the_numbers_of_docs_tune_md_come_from_this_run(tmp_path, cli, monkeypatch):
    """docs/tune.md shows one run on the penguins (configs/tune.yaml): its best trial and table again."""
    import re

    text = (ROOT / "docs" / "tune.md").read_text()
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    block = re.search(r"```console\n\$ (backprop tune [^\n]*)\n(.*?)```", text, re.S)
    command, shown = block.group(1), block.group(2)
    (tmp_path / "docs" / "img").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    r = cli(*command.split()[1:])
    assert r.exit_code == 0, r.output
    got_rows = [l for l in r.stdout.splitlines() if re.match(r"\s+\d+\s", l)]
    want_rows = [l for l in shown.splitlines() if re.match(r"\s+\d+\s", l)]
    assert len(got_rows) == len(want_rows)
    for got, want in zip(got_rows, want_rows):
        g, w = got.split(), want.split()
        assert g[0] == w[0] and g[2:4] == w[2:4] and g[6:] == w[6:]  # number, width, batch size, state
        for a, b in ((g[1], w[1]), (g[4], w[4])):  # lr and val_loss: the same to 1e-3 relative
            assert math.isclose(float(a), float(b), rel_tol=1e-3), (got, want)
    best = re.search(r"best:\s+trial (\d+): val_loss (\S+)", shown)
    gbest = re.search(r"best:\s+trial (\d+): val_loss (\S+)", r.stdout)
    assert gbest.group(1) == best.group(1) and math.isclose(float(gbest.group(2)), float(best.group(2)), rel_tol=1e-3)
    assert (tmp_path / "docs" / "img" / "tune.png").stat().st_size > 10_000
    # the best config and the untuned one, trained alone
    for cmd, line in re.findall(r"\$ (backprop train -c \S+ -q)\n\.\.\.\n(validation: [^\n]*)", text):
        r = cli(*cmd.split()[1:])
        assert r.exit_code == 0, r.output
        got = next(l for l in r.stdout.splitlines() if l.startswith("validation:"))
        g, w = re.findall(r"loss (\S+),", got), re.findall(r"loss (\S+),", line)
        assert math.isclose(float(g[0]), float(w[0]), rel_tol=1e-3), (got, line)
    # the problems of bad.yaml's section
    shown_errors = re.search(r"\$ backprop config validate -c bad.yaml\n(.*?)\[exit code 2\]", text, re.S).group(1)
    tiny(tmp_path, """\
        sampler: grid
        space:
          optimizer.lrr: {low: 1.0e-4, high: 0.1}
          optimizer.lr: {low: -1, high: 0.1, step: 0.1}
          model.hidden_size: {choices: [8, 16, 0.5]}
        """, name="bad.yaml")
    r = cli("config", "validate", "-c", "bad.yaml")
    assert r.exit_code == 2 and r.stderr.startswith(shown_errors), r.stderr


@pytest.mark.parametrize("args", [["--workers", "40"], ["--storage", "foo://h/db"], ["--set", "tune.metric=val_r2"]])
def test_tune_errors_never_import_torch(args, tmp_path):
    from test_imports import run as probe

    cfg = tiny(tmp_path, SPACE)
    r = probe(["tune", "-c", cfg, *args], tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr
    assert r.stderr.count("error: ") == 1, r.stderr


def test_plot_of_a_study_named_with_dollars_and_a_figure_that_fails(cli, tmp_path, monkeypatch):
    """Issue 23, item 3: the config's and study's names are drawn as data (no mathtext); a figure that cannot
    be drawn costs only itself: the summary and the JSON are written, then one line and exit 2."""
    cfg = tiny(tmp_path, SPACE.replace("trials: 4", "trials: 2"), name="b_$5k_$10k.yaml", epochs=1)
    out = tmp_path / "t.png"
    r = cli("tune", "-c", cfg, "--plot", out, "--set", "tune.pruner=none")
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.figure

    def fail(self, *a, **kw):
        raise ValueError("cannot\ndraw")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    out2 = tmp_path / "u.png"
    r = cli("tune", "-c", cfg, "--plot", out2, "--trials", "1", "--format", "json")
    assert r.exit_code == 2, r.output
    assert len(json.loads(r.stdout)["trials"]) == 3  # the JSON is written
    assert r.stderr.strip().splitlines()[-1] == f"error: {out2}: the figure could not be drawn (ValueError: cannot draw)"
    assert not out2.exists()

"""Checkpoints, exact resume, crash-safe saves and refusing unsafe checkpoints."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from backprop_cli.io.checkpoint import load_checkpoint
from backprop_cli.errors import CheckpointError
from conftest import ROOT, write

CONFIG = """\
model: {{input_size: 8, hidden_size: 16, output_size: 2, activation: tanh}}
optimizer: {{{optimizer}}}
data: {{kind: synthetic, samples: 200, batch_size: 32, shuffle: true}}
{extra}
train: {{steps: 100{train}}}
"""


def make(tmp_path, optimizer="name: sgd, lr: 0.1, momentum: 0.9", extra="", train=""):
    return write(tmp_path / "r.yaml", CONFIG.format(optimizer=optimizer, extra=extra, train=train))


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("optimizer,extra,train", [
    ("name: sgd, lr: 0.1, momentum: 0.9", "", ""),
    ("name: adam, lr: 0.01", "", ""),
    ("name: adamw, lr: 0.01", "scheduler: {name: warmup_cosine, warmup_steps: 10, T_max: 90}", ", clip_grad_norm: 0.5"),
    ("name: rmsprop, lr: 0.001, momentum: 0.5", "scheduler: {name: step, step_size: 7, gamma: 0.5}", ""),
])
def test_50_then_50_more_is_bitwise_the_same_as_100(cli, tmp_path, optimizer, extra, train):
    cfg = make(tmp_path, optimizer, extra, train)
    full, rest, ck = tmp_path / "full.jsonl", tmp_path / "rest.jsonl", tmp_path / "half.pt"
    assert cli("train", "-c", cfg, "--metrics", full, "-q").exit_code == 0
    assert cli("train", "-c", cfg, "--steps", 50, "--save", ck, "-q").exit_code == 0
    r = cli("train", "-c", cfg, "--resume", ck, "--metrics", rest)
    assert r.exit_code == 0, r.output
    a, b = records(full), records(rest)
    assert [x["step"] for x in b] == list(range(51, 101))
    assert [x["loss"] for x in b] == [x["loss"] for x in a[50:]]  # bitwise (JSON floats round-trip)
    assert [x["lr"] for x in b] == [x["lr"] for x in a[50:]]
    assert [x["grad_norms"] for x in b] == [x["grad_norms"] for x in a[50:]]
    assert "resume:     from" in r.stdout and "changed:    train.steps: 50 → 100" in r.stdout


def test_a_checkpoint_of_the_for_loop_kernel_resumes_with_the_fused_one(cli, tmp_path, monkeypatch):
    """Older checkpoints (and ones from a device without a fused kernel) hold foreach/fused flags in
    their param groups; the resumed run keeps its own implementation and continues the same math."""
    from backprop_cli.core import build

    cfg = make(tmp_path, "name: adam, lr: 0.01")
    full, rest, ck = tmp_path / "full.jsonl", tmp_path / "rest.jsonl", tmp_path / "half.pt"
    assert cli("train", "-c", cfg, "--metrics", full, "-q").exit_code == 0
    with monkeypatch.context() as m:
        m.setattr(build, "kernel_options", lambda specs, device: {"foreach": False})
        assert cli("train", "-c", cfg, "--steps", 50, "--save", ck, "-q").exit_code == 0
    groups = load_checkpoint(ck)["optimizer"]["param_groups"]
    assert [(g["fused"], g["foreach"]) for g in groups] == [(None, False)]

    again = tmp_path / "again.pt"
    r = cli("train", "-c", cfg, "--resume", ck, "--metrics", rest, "--save", again)
    assert r.exit_code == 0, r.output
    groups = load_checkpoint(again)["optimizer"]["param_groups"]
    assert [g["fused"] for g in groups] == [True] and "fused implementation" in r.stdout
    a, b = records(full), records(rest)
    assert [x["step"] for x in b] == list(range(51, 101))
    assert torch.allclose(torch.tensor([x["loss"] for x in b]), torch.tensor([x["loss"] for x in a[50:]]),
                          rtol=1e-5, atol=1e-7)


def test_resume_runs_the_remaining_steps_numbered_as_uninterrupted(cli, tmp_path):
    cfg = make(tmp_path)
    ck, m = tmp_path / "c.pt", tmp_path / "m.csv"
    cli("train", "-c", cfg, "--steps", 12, "--save", ck, "-q")
    assert load_checkpoint(ck)["step"] == 12
    r = cli("train", "-c", cfg, "--steps", 25, "--resume", ck, "--metrics", m, "--save", ck, "-q")
    assert r.exit_code == 0, r.output
    lines = m.read_text().splitlines()
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(13, 26))
    assert load_checkpoint(ck)["step"] == 25


def test_resume_without_save_says_the_model_is_not_kept(cli, tmp_path):
    """train --resume CKPT without --save trains on and keeps nothing: the start panel says so (and
    not when --save is given); the checkpoint resumed from is left as it was."""
    cfg = make(tmp_path)
    ck = tmp_path / "c.pt"
    assert cli("train", "-c", cfg, "--steps", 4, "--save", ck, "-q").exit_code == 0
    before = ck.read_bytes()
    r = cli("train", "-c", cfg, "--steps", 6, "--resume", ck)
    assert r.exit_code == 0, r.output
    line = next(line for line in r.stdout.splitlines() if line.startswith("not saved:"))
    assert "no --save: the resumed model is lost when the run ends; add --save FILE" in line
    assert ck.read_bytes() == before
    r = cli("train", "-c", cfg, "--steps", 6, "--resume", ck, "--save", ck)
    assert r.exit_code == 0 and "not saved" not in r.stdout and load_checkpoint(ck)["step"] == 6
    assert "not saved" not in cli("train", "-c", cfg, "--steps", 2).stdout  # no resume: nothing to lose


def test_checkpoint_keys(cli, tmp_path):
    cfg = make(tmp_path, extra="scheduler: {name: cosine}")
    ck = tmp_path / "c.pt"
    cli("train", "-c", cfg, "--steps", 3, "--save", ck, "-q")
    state = torch.load(ck, weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "step", "config", "rng", "version", "data"}
    assert state["data"]["x_scaling"] is None and state["data"]["classes"] is None
    assert state["version"] == 1 and state["step"] == 3
    assert state["scheduler"]["last_epoch"] == 3
    assert torch.equal(state["rng"]["torch"], torch.get_rng_state()) or state["rng"]["torch"].dtype == torch.uint8
    assert state["rng"]["data"] == {"next_batch": 3}
    assert state["config"]["model"]["hidden_size"] == 16


def test_save_every_writes_intermediate_checkpoints(cli, tmp_path):
    from backprop_cli.core.records import StepRecord
    from backprop_cli.runs.sinks import CheckpointSink, Outcome

    saved = []
    sink = CheckpointSink(tmp_path / "c.pt", lambda path, step: saved.append(step), 10, 30, lambda: True)
    for step in range(1, 31):
        sink.record(StepRecord(step, 1.0, 1.0, {}, 0.1, 0.0))
    sink.close(Outcome("done", 30, 30))
    assert saved == [10, 20, 30]
    cfg = make(tmp_path)
    r = cli("train", "-c", cfg, "--steps", 30, "--save", tmp_path / "c.pt", "--save-every", 10, "-q")
    assert r.exit_code == 0 and load_checkpoint(tmp_path / "c.pt")["step"] == 30
    r = cli("train", "-c", cfg, "--save-every", 10)
    assert r.exit_code == 2 and "--save-every needs --save" in r.stderr


def test_resume_with_another_model_or_optimizer_is_refused(cli, tmp_path):
    cfg = make(tmp_path)
    ck = tmp_path / "c.pt"
    cli("train", "-c", cfg, "--steps", 5, "--save", ck, "-q")
    r = cli("train", "-c", cfg, "--resume", ck, "--set", "model.hidden_size=32")
    assert r.exit_code == 2 and "needs the same model" in r.stderr and "model.hidden_size: 16 → 32" in r.stderr
    r = cli("train", "-c", cfg, "--resume", ck, "--set", "optimizer=adam")
    assert r.exit_code == 2 and "needs the same optimizer" in r.stderr
    r = cli("train", "-c", cfg, "--resume", ck, "--steps", 5)
    assert r.exit_code == 2 and "nothing to resume" in r.stderr


def test_resume_with_a_new_lr_is_allowed_and_said(cli, tmp_path):
    cfg = make(tmp_path)
    ck, m = tmp_path / "c.pt", tmp_path / "m.jsonl"
    cli("train", "-c", cfg, "--steps", 5, "--save", ck, "-q")
    r = cli("train", "-c", cfg, "--resume", ck, "--set", "optimizer.lr=0.05", "--steps", 8, "--metrics", m)
    assert r.exit_code == 0 and "changed:    optimizer.lr: 0.1 → 0.05" in r.stdout
    assert {x["lr"] for x in records(m)} == {0.05}


def test_a_checkpoint_that_would_run_code_is_refused(cli, tmp_path):
    marker = tmp_path / "HACKED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "optimizer": {}, "step": 1, "config": {}}, evil)
    cfg = make(tmp_path)
    for args in (["train", "-c", cfg, "--resume", evil], ["inspect-grads", "-c", cfg, "--checkpoint", evil]):
        r = cli(*args)
        assert r.exit_code == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "refused" in r.stderr and "GLOBAL" in r.stderr
        assert not marker.exists()


@pytest.mark.parametrize("damage,expect", [
    (lambda b: b[: len(b) // 2], "not a readable checkpoint"),
    (lambda b: b"\x00" * len(b), "not a readable checkpoint"),
    (lambda b: b"", "not a readable checkpoint"),
])
def test_truncated_or_corrupt_checkpoints(cli, tmp_path, damage, expect):
    cfg = make(tmp_path)
    ck = tmp_path / "c.pt"
    cli("train", "-c", cfg, "--steps", 2, "--save", ck, "-q")
    ck.write_bytes(damage(ck.read_bytes()))
    r = cli("train", "-c", cfg, "--resume", ck)
    assert r.exit_code == 2 and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output


def test_not_a_backprop_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="missing keys: model, optimizer, step, config"):
        load_checkpoint(p)
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(p)


WRITER = textwrap.dedent("""\
    import os, sys, torch
    from backprop_cli.io.checkpoint import save_checkpoint
    torch.set_num_threads(1)  # no thread pool in the parent: each forked writer starts clean
    model = torch.nn.Linear(1024, 2048)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in sys.stdin:  # each line: one new writer process, forked from this one (torch loads once)
        pid = os.fork()
        if pid == 0:
            step = 0
            while True:
                step += 1
                with torch.no_grad():
                    model.weight.fill_(step)
                save_checkpoint(sys.argv[1], model=model, optimizer=opt, step=step, config={})
                print("saved", os.getpid(), step, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
    """)


def test_a_writer_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    """Each writer is a real process saving in a loop, SIGKILLed at another moment after its first save.
    The writers are forked from one process that has loaded torch, so torch starts once, not four times."""
    ck = tmp_path / "c.pt"
    script = write(tmp_path / "writer.py", WRITER)
    server = subprocess.Popen([sys.executable, str(script), str(ck)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []  # every line the writers printed, for the message of a failure

    def why():
        server.kill()
        return f"lines: {seen[-6:]}; the writers' stderr: {server.communicate()[1][-3000:]}"

    try:
        for delay in (0.0, 0.013, 0.031, 0.057):
            server.stdin.write("go\n")
            server.stdin.flush()
            seen.append(server.stdout.readline())  # the new writer's first save is complete
            first = seen[-1].split()
            assert first[:1] == ["saved"] and first[2:] == ["1"], why()
            time.sleep(delay)
            os.kill(int(first[1]), signal.SIGKILL)
            while (line := server.stdout.readline()) != "reaped\n":
                seen.append(line)
                assert line.startswith(f"saved {first[1]} "), why()
            state = load_checkpoint(ck)
            step = state["step"]
            assert step >= 1 and bool((state["model"]["weight"] == step).all()), (step, why())
    finally:
        server.kill()
        server.communicate()


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_file(cli, tmp_path, monkeypatch):
    cfg = make(tmp_path)
    ck = tmp_path / "c.pt"
    cli("train", "-c", cfg, "--steps", 2, "--save", ck, "-q")
    before = ck.read_bytes()

    def broken_save(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    r = cli("train", "-c", cfg, "--steps", 3, "--save", ck, "-q")
    assert r.exit_code != 0
    assert ck.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "r.yaml"]


def test_a_crash_mid_run_leaves_the_previous_metrics_file(cli, tmp_path, monkeypatch):
    import backprop_cli.data.batches as data

    cfg = make(tmp_path)
    m = write(tmp_path / "m.jsonl", '{"previous": true}\n')
    real = data.Batches.__call__

    def crash(self, i):
        if i == 5:
            raise RuntimeError("disk on fire")
        return real(self, i)

    monkeypatch.setattr(data.Batches, "__call__", crash)
    r = cli("train", "-c", cfg, "--metrics", m)
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)
    assert m.read_text() == '{"previous": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "r.yaml"]


ODD_VALUES = [None, "x", 1, 2.5, True, [1], {}, {"a": 1}, torch.zeros(2)]


def _structural_mutations(good: dict):
    """Each top-level key, and each key one level down, replaced by each odd value."""
    import copy

    for key in good:
        for v in ODD_VALUES:
            yield f"{key}={v!r}", {**good, key: v}
    for sub in ("model", "optimizer", "config", "rng"):
        for k in good[sub]:
            for v in ODD_VALUES:
                state = copy.deepcopy(good)
                state[sub][k] = v
                yield f"{sub}.{k}={v!r}", state


def test_a_checkpoint_with_odd_contents_is_refused_in_one_line(cli, tmp_path):
    """A checkpoint that loads (weights_only) but holds the wrong things anywhere: exit 2 with one line
    naming the key and what it holds, or (where the value is harmless, e.g. `version`) a normal run."""
    cfg = make(tmp_path, extra="scheduler: {name: step, step_size: 5}")
    good_path, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    assert cli("train", "-c", cfg, "--steps", 3, "--save", good_path, "-q").exit_code == 0
    good = torch.load(good_path, weights_only=True)
    must_refuse = ("model=", "optimizer=", "model.layer1.weight=", "optimizer.param_groups=", "rng.torch=",
                   "config=", "step=")
    refused = 0
    for label, state in _structural_mutations(good):
        torch.save(state, bad)
        r = cli("train", "-c", cfg, "--resume", bad, "--steps", 5, "-q")
        assert r.exit_code in (0, 2) and "Traceback" not in r.output, (label, r.output[-500:], r.exception)
        if r.exit_code == 2:
            refused += 1
            assert len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr, (label, r.stderr)
        elif label.startswith(must_refuse):
            # the only values accepted there are valid ones: an int step, a config mapping
            assert label in ("step=1", "config={}", "config={'a': 1}"), label
    assert refused > 100
    r = cli("train", "-c", cfg, "--resume", good_path, "--steps", 5, "-q")
    assert r.exit_code == 0


def test_damaged_checkpoint_bytes_never_escape_as_another_error(tmp_path):
    """Truncations and byte flips anywhere in a real checkpoint (and files that are not checkpoints at
    all): load_checkpoint returns a checked dict or raises CheckpointError, nothing else."""
    import random

    from backprop_cli.io.checkpoint import save_checkpoint
    from backprop_cli.core.model import build_model
    from backprop_cli.config import load_config

    cfg = load_config(make(tmp_path))
    model = build_model(cfg.model, 0)
    opt = torch.optim.Adam(model.parameters())
    good = tmp_path / "good.pt"
    save_checkpoint(good, model=model, optimizer=opt, step=3, config=cfg.plain())
    data = good.read_bytes()
    rng = random.Random(0)
    damaged = [data[:n] for n in sorted(rng.sample(range(len(data)), 40))]
    for _ in range(60):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        damaged.append(bytes(b))
    damaged += [b"root:x:0:0:root:/root:/bin/bash\n", b"\x80\x02]q\x00.", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01",
                os.urandom(512), b"PK\x03\x04" + os.urandom(100)]
    bad = tmp_path / "bad.pt"
    loaded = 0
    for blob in damaged:
        bad.write_bytes(blob)
        try:
            state = load_checkpoint(bad)
        except CheckpointError as e:
            assert str(e).startswith(str(bad)) and "\n" not in str(e)
        else:
            loaded += 1
            assert isinstance(state, dict)
    assert loaded < len(damaged)


# ------------------------------------------- the evaluation goes on after a resume (issue 23, item 2)

HOUSES = """\
model: {{input_size: 4, hidden_size: 16, output_size: 1}}
loss: mse
optimizer: {{name: adam, lr: 1.0}}
data: {{kind: csv, path: {path}, target: price_k, batch_size: 16, validation: 0.2, standardize: true,
        standardize_target: true}}
train: {{steps: 60, eval_every: 5{early}}}
"""


def _core(recs):
    """What a step computes (time and the logging-step diagnostics depend on where a run starts)."""
    return [{k: v for k, v in x.items() if k in ("step", "epoch", "loss", "grad_norm", "grad_norms", "lr")
             or k.startswith(("val_", "train_"))} for x in recs]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The houses run straight through (adam at lr 1.0 overshoots: its val_loss rises after a best, and
    patience 2 stops it early): its config, metrics records, JSON summary and --save-best checkpoint."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    tmp = tmp_path_factory.mktemp("houses")
    cfg = write(tmp / "h.yaml", HOUSES.format(path=ROOT / "configs" / "data" / "houses.csv",
                                              early=", early_stopping: {patience: 2}"))
    r = CliRunner().invoke(app, ["train", "-c", str(cfg), "--metrics", str(tmp / "full.jsonl"), "--save-best",
                                 str(tmp / "best_full.pt"), "--format", "json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    return cfg, records(tmp / "full.jsonl"), json.loads(r.stdout)["summary"], tmp / "best_full.pt"


@pytest.mark.parametrize("where", ["after the best", "before the best"])
def test_a_resumed_run_keeps_its_best_and_its_patience(cli, tmp_path, straight, where):
    """The best val_loss, its step and early stopping's counter are in the checkpoint, so a run stopped and
    resumed is the uninterrupted run: the same records bitwise, the same early stop, the same best checkpoint
    (its weights and step), and --save-best is never replaced by a worse model."""
    cfg, full, summary, best_full = straight
    stop, best = summary["steps"], summary["validation"]["best_step"]
    cuts = [k for k in range(5, stop, 5) if (k > best if where == "after the best" else k < best)]
    assert stop < 60 and cuts, (best, stop)  # the run stops early, and there is an evaluation to cut at
    cut = cuts[0] if where == "after the best" else cuts[-1]
    part = cli("train", "-c", cfg, "--steps", cut, "--save", tmp_path / "cut.pt", "--save-best", tmp_path / "best.pt",
               "-q")
    assert part.exit_code == 0, part.output
    saved = load_checkpoint(tmp_path / "cut.pt")["evaluation"]
    assert (saved["best_step"] == best) == (where == "after the best") and saved["best_loss"] is not None
    assert saved["waited"] >= 1 or where == "before the best"  # after the best, the counter has started
    rest = tmp_path / "rest.jsonl"
    r = cli("train", "-c", cfg, "--resume", tmp_path / "cut.pt", "--metrics", rest, "--save-best",
            tmp_path / "best.pt", "--format", "json")
    assert r.exit_code == 0, r.output
    resumed = json.loads(r.stdout)["summary"]
    after = [x for x in full if x["step"] > cut]
    assert _core(records(rest)) == _core(after)  # bitwise, the evaluations included, none after the early stop
    assert records(rest)[-1]["step"] == stop and resumed["validation"] == summary["validation"]
    kept, want = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(best_full)
    assert kept["step"] == want["step"] == best
    assert kept["model"].keys() == want["model"].keys()
    assert all(torch.equal(kept["model"][k], want["model"][k]) for k in want["model"])
    assert kept["evaluation"] == want["evaluation"] and kept["evaluation"]["best_step"] == best


def test_a_checkpoint_without_an_evaluation_entry_resumes_from_scratch(cli, tmp_path, straight):
    """Checkpoints written before the entry existed still load: the resumed run's best starts anew."""
    cfg = straight[0]
    assert cli("train", "-c", cfg, "--steps", 10, "--save", tmp_path / "c.pt", "-q").exit_code == 0
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["evaluation"]
    torch.save(state, tmp_path / "old.pt")
    r = cli("train", "-c", cfg, "--resume", tmp_path / "old.pt", "--steps", 15, "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["validation"]["best_step"] == 15  # the only evaluation it saw


def test_a_run_that_stopped_early_has_nothing_to_resume(cli, tmp_path, straight):
    """Its counter already reaches the patience: one line, exit 2, saying which key to raise; with a
    larger patience the run goes on."""
    cfg, _, summary, _ = straight
    ck = tmp_path / "stopped.pt"
    assert cli("train", "-c", cfg, "--save", ck, "-q").exit_code == 0
    assert load_checkpoint(ck)["step"] == summary["steps"] and load_checkpoint(ck)["evaluation"]["waited"] == 2
    r = cli("train", "-c", cfg, "--resume", ck, "-q")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert r.stderr.startswith(f"error: {ck}: its run had stopped early (val_loss did not improve for 2 "
                               "evaluations, train.early_stopping.patience 2): nothing to resume; raise "
                               "train.early_stopping.patience (e.g. --set train.early_stopping.patience=4)"), r.stderr
    r = cli("train", "-c", cfg, "--resume", ck, "--set", "train.early_stopping.patience=3", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["steps"] == 5  # one more evaluation without a better val_loss: stopped


@pytest.mark.parametrize("evaluation, fragment", [
    ({"best_loss": 1.0}, "evaluation: expected a mapping of best_loss, best_step, reference, waited"),
    ({"best_loss": "x", "best_step": 1, "reference": None, "waited": 0},
     "evaluation.best_loss: expected a finite number or null (got str 'x')"),
    ({"best_loss": float("nan"), "best_step": 1, "reference": None, "waited": 0},
     "evaluation.best_loss: expected a finite number or null (got float nan)"),
    ({"best_loss": 1.0, "best_step": 2**60, "reference": None, "waited": 0},
     "evaluation.best_step: expected an integer 0 … 1125899906842624 (got int 1152921504606846976)"),
    ({"best_loss": 1.0, "best_step": 1, "reference": 1.0, "waited": -1},
     "evaluation.waited: expected an integer 0 … 1125899906842624 (got int -1)"),
    ({"best_loss": 1.0, "best_step": 1, "reference": 10**400, "waited": 0},
     "evaluation.reference: expected a finite number or null (got int <an integer of 1,329 bits>)"),
], ids=["keys", "str", "nan", "step", "waited", "huge"])
def test_a_crafted_evaluation_entry_is_one_line(cli, tmp_path, straight, evaluation, fragment):
    cfg = straight[0]
    ck = tmp_path / "c.pt"
    assert cli("train", "-c", cfg, "--steps", 5, "--save", ck, "-q").exit_code == 0
    state = torch.load(ck, weights_only=True)
    state["evaluation"] = evaluation
    torch.save(state, ck)
    r = cli("train", "-c", cfg, "--resume", ck, "-q")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert r.stderr.startswith(f"error: {ck}: not a valid backprop checkpoint: ") and fragment in r.stderr, r.stderr


@pytest.mark.parametrize("first", ["restore_best", "plain"])
def test_restore_best_after_a_resume_puts_the_checkpoints_best_back(cli, tmp_path, straight, first):
    """With restore_best a checkpoint keeps a copy of the best evaluation's state (its ``best`` entry), so a
    resumed run whose best came before the resume still ends on that model, as the uninterrupted run does:
    its --save holds the weights of the straight run's --save-best, bitwise, and its summary the best's
    numbers. A checkpoint of a run without restore_best has no copy: the resumed run says so (one warning
    naming the steps) instead of claiming it restored it. (With restore_best the first run's --save is at its
    best step, so the resume starts there.)"""
    cfg, _, summary, best_full = straight
    best = summary["validation"]["best_step"]
    cut = next(k for k in range(5, summary["steps"], 5) if k > best)
    keep = ["--set", "train.early_stopping={patience: 2, restore_best: true}"]
    assert cli("train", "-c", cfg, *(keep if first == "restore_best" else []), "--steps", cut, "--save",
               tmp_path / "c.pt", "-q").exit_code == 0
    start = best if first == "restore_best" else cut
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["step"] == start and ("best" in saved) == (first == "restore_best")
    r = cli("train", "-c", cfg, *keep, "--resume", tmp_path / "c.pt", "--save", tmp_path / "end.pt",
            "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["summary"]
    assert out["validation"]["best_step"] == best
    warned = [w for w in out["warnings"] if w.startswith("restore_best:")]
    if first == "restore_best":
        end, want = load_checkpoint(tmp_path / "end.pt"), load_checkpoint(best_full)
        assert out["validation"]["restored_best"] == best and warned == []
        assert out["validation"]["loss"] == summary["validation"]["best_loss"]  # the best's numbers, measured again
        assert end["step"] == best and all(torch.equal(end["model"][k], want["model"][k]) for k in want["model"])
        return
    assert "restored_best" not in out["validation"]
    assert warned == [
        f"restore_best: the best evaluation is the checkpoint's (step {best}, val_loss "
        f"{out['validation']['best_loss']:.5g}; resumed from step {start}) and no later one was better; the resumed "
        "run has no copy of its weights, so the model at the end and --save are the last step's (the first run's "
        "--save-best file holds them)"]


def test_a_crafted_best_entry_is_one_line(cli, tmp_path, straight):
    """The ``best`` copy gets every check of the last state: a weight of another shape, a non-finite value or
    an entry of other keys is one line, exit 2."""
    cfg = straight[0]
    keep = ["--set", "train.early_stopping={patience: 2, restore_best: true}"]
    ck = tmp_path / "c.pt"
    assert cli("train", "-c", cfg, *keep, "--steps", 10, "--save", ck, "-q").exit_code == 0
    good = torch.load(ck, weights_only=True)
    assert sorted(good["best"]) == ["model", "optimizer", "scheduler"]
    for change, fragment in (
            (lambda b: b["model"].__setitem__("layer1.weight", torch.zeros(3, 3)), "layer1.weight"),
            (lambda b: b["model"]["layer1.bias"].fill_(float("nan")), "best.model.layer1.bias: holds non-finite"),
            (lambda b: b.pop("optimizer"), "best: expected a mapping of model, optimizer, scheduler")):
        state = torch.load(ck, weights_only=True)
        change(state["best"])
        torch.save(state, tmp_path / "bad.pt")
        r = cli("train", "-c", cfg, *keep, "--resume", tmp_path / "bad.pt", "-q")
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.output

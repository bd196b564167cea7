"""The outputs of train (sinks): TensorBoard."""

import json

import pytest

from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"


def test_tensorboard_scalars_and_histograms(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    r = cli("train", "-c", REG, "--steps", 12, "--log-every", 5, "--tensorboard", tb, "-q")
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss", "grad_norm/total", "grad_norm/layer1.weight", "lr"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 13))
    assert {"grad/layer1.weight", "weight/layer2.bias"} <= set(tags["histograms"])
    # the diagnostics, on logging steps (the first, every 5th, the last)
    diag = {"activations/layer1/mean", "activations/layer1/std", "activations/layer1/saturated_fraction",
            "grad_to_weight/layer1.weight", "update_ratio/layer2.bias"}
    assert diag <= set(tags["scalars"])
    assert all([e.step for e in acc.Scalars(tag)] == [1, 5, 10, 12] for tag in diag)
    assert [e.step for e in acc.Histograms("grad/layer1.weight")] == [1, 5, 10]
    m = tmp_path / "m.jsonl"
    cli("train", "-c", REG, "--steps", 12, "--log-every", 5, "--metrics", m, "-q")
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([r["loss"] for r in recs], rel=1e-6)
    logged = [r for r in recs if "activations" in r]
    assert [e.value for e in acc.Scalars("activations/layer1/std")] == pytest.approx(
        [r["activations"]["layer1"]["std"] for r in logged], rel=1e-6)
    assert [e.value for e in acc.Scalars("update_ratio/layer2.bias")] == pytest.approx(
        [r["update_ratios"]["layer2.bias"] for r in logged], rel=1e-6)


def test_tensorboard_has_the_epoch_loss_and_every_evaluation_of_the_metrics(cli, tmp_path):
    """The README's --tensorboard row: epoch_loss at epoch ends, val_* and train_* at evaluations,
    the same numbers and steps as the metrics file's records."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb, m = tmp_path / "tb", tmp_path / "m.jsonl"
    r = cli("train", "-c", CONFIGS / "classification.yaml", "--steps", 60, "--set", "data.validation=0.2",
            "--set", "train.eval_every=10", "--tensorboard", tb, "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    evaluated = [x for x in recs if "val_loss" in x]
    assert [x["step"] for x in evaluated] == [10, 20, 30, 40, 50, 60]
    for key in ("val_loss", "val_accuracy", "train_loss", "train_accuracy"):
        assert [(e.step, e.value) for e in acc.Scalars(key)] == [
            (x["step"], pytest.approx(x[key], rel=1e-6)) for x in evaluated], key
    ends = [x for x in recs if "epoch_loss" in x]
    assert ends and [(e.step, e.value) for e in acc.Scalars("epoch_loss")] == [
        (x["step"], pytest.approx(x["epoch_loss"], rel=1e-6)) for x in ends]


def test_tensorboard_missing_is_a_clear_error(cli, monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    r = cli("train", "-c", REG, "--steps", 2, "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 2 and "pip install 'backprop-cli[tensorboard]'" in r.stderr


def _json_oracle(v):
    """What the metrics writer promises: json.dumps, with non-finite numbers as null."""
    import math

    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_oracle(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_oracle(x) for x in v]
    return v


def test_metrics_lines_are_what_json_dumps_writes():
    """The metrics writer's encoder (a template per record shape) against json.dumps itself, on every
    record shape train and compare write, with non-finite numbers in each place, and on arbitrary
    records (hypothesis)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from backprop_cli.io.metrics import JsonLines

    enc = JsonLines()
    base = {"step": 7, "loss": 0.1234567890123, "grad_norm": 3e-9,
            "grad_norms": {"layer1.weight": 1.5, "layer1.bias": 2.0000000000000004, "layer2.weight": 1e300},
            "lr": 0.01, "time": 12.75}
    variants = [base, {**base, "update_ratio": 1e-4}, {**base, "clipped": True, "skipped": True, "loss_scale": 65536.0},
                {**base, "optimizer": 'sgd lr=0.1 "x" %r', "seed": 3}, {**base, "grad_norms": {}}]
    for rec in variants:
        for key in ("loss", "grad_norm", "lr", "time"):
            for bad in (float("nan"), float("inf"), -float("inf")):
                odd = {**rec, key: bad}
                assert enc.line(odd) == json.dumps(_json_oracle(odd)) + "\n"
        odd = {**rec, "grad_norms": {**rec["grad_norms"], "layer1.bias": float("nan")}}
        for r in (rec, odd, rec):
            assert enc.line(r) == json.dumps(_json_oracle(r)) + "\n"

    scalar = st.one_of(st.floats(), st.integers(-10**15, 10**15), st.booleans(), st.none(), st.text(max_size=5))
    value = st.recursive(scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c,
                                                                                                max_size=3)),
                         max_leaves=6)
    record = st.dictionaries(st.sampled_from(["step", "loss", "grad_norms", "lr", "x%s", 'q"']),
                             st.one_of(value, st.dictionaries(st.text(max_size=4), st.floats(), max_size=3)))

    @settings(max_examples=400, deadline=None)
    @given(record)
    def check(rec):
        assert enc.line(rec) == json.dumps(_json_oracle(rec)) + "\n"

    check()


def test_metrics_files_round_trip_in_batches(tmp_path, monkeypatch):
    """Records are written a batch at a time; the file holds every record once, in order, in both formats."""
    from backprop_cli.io.metrics import MetricsWriter
    from backprop_cli.io.metrics_read import read_metrics

    monkeypatch.setattr(MetricsWriter, "BATCH", 3)
    names = ["layer1.weight", "layer1.bias"]
    recs = [{"step": i, "loss": 1.0 / i, "grad_norm": float(i), "grad_norms": {"layer1.weight": 0.5 * i, "layer1.bias": 0.25},
             "lr": 0.01, "time": 0.001 * i} for i in range(1, 11)]
    for suffix in (".jsonl", ".csv"):
        w = MetricsWriter(tmp_path / f"m{suffix}", names)
        for r in recs:
            w.write(r)
        assert not (tmp_path / f"m{suffix}").exists()  # the file appears when closed
        w.close()
        assert read_metrics(tmp_path / f"m{suffix}") == recs
    text = (tmp_path / "m.jsonl").read_text()
    assert text == "".join(json.dumps(r) + "\n" for r in recs)


# --------------------------------------------------------------------------- the stages, one by one

def _rec(step, loss=1.0, skipped=False):
    from backprop_cli.core.records import StepRecord

    return StepRecord(step=step, loss=loss, grad_norm=0.0, grad_norms={}, lr=0.1, time=0.0, skipped=skipped)


def test_epoch_sink_weights_each_batch_by_its_rows():
    """epoch_loss is the mean over the epoch's rows: batches of 4, 4 and 2 rows, the last one's loss
    counts half as much as the others; a skipped step is left out; a partial epoch gets none."""
    from backprop_cli.runs.sinks import EpochSink

    sink = EpochSink(3, lambda k: (4, 4, 2)[k])
    recs = [_rec(1, 1.0), _rec(2, 2.0), _rec(3, 4.0), _rec(4, 1.0), _rec(5, 9.0, skipped=True), _rec(6, 3.0), _rec(7, 5.0)]
    for r in recs:
        sink.record(r)
    assert [r.epoch for r in recs] == [1, 1, 1, 2, 2, 2, 3]
    assert recs[2].epoch_loss == pytest.approx((1.0 * 4 + 2.0 * 4 + 4.0 * 2) / 10)
    assert recs[5].epoch_loss == pytest.approx((1.0 * 4 + 3.0 * 2) / 6)  # step 5 skipped: its 4 rows left out
    assert [r.epoch_loss for r in recs[:2] + recs[3:5] + recs[6:]] == [None] * 5


def test_evaluation_sink_keeps_the_best_and_stops_after_patience():
    from backprop_cli.runs.sinks import EvaluationSink, Outcome

    losses = iter([1.0, 0.8, 0.79, 0.85, 0.9])
    saved = []
    sink = EvaluationSink(lambda: ({"val_loss": next(losses)}, {}), every=2, total=11, patience=3, min_delta=0.05,
                          save_best=lambda step, loss: saved.append((step, loss)) or f"best at {step}")
    assert [s for s in range(1, 12) if sink.evaluates_at(s)] == [2, 4, 6, 8, 10, 11]
    stopped_at = None
    for step in range(1, 12):
        rec = _rec(step, skipped=step == 10)
        sink.record(rec)
        assert (rec.evaluation is not None) == (sink.evaluates_at(step) and step != 10)
        if sink.stop_requested and stopped_at is None:
            stopped_at = step
    # 0.79 is a new best (saved) but not better than 0.8 by min_delta, so it counts towards patience;
    # the step-10 record was skipped (no evaluation); 0.79, 0.85, 0.9 are three evaluations without an
    # improvement of 0.05: stop at step 11
    assert saved == [(2, 1.0), (4, 0.8), (6, 0.79)]
    assert stopped_at == 11
    assert sink.best_loss == 0.79 and sink.best_step == 6
    assert sink.summary() == {"loss": 0.9, "best_step": 6, "best_loss": 0.79}
    assert sink.close(Outcome("done", 11, 11)) == {"best checkpoint": "best at 6"}


def test_checkpoint_sink_never_replaces_a_file_this_run_did_not_write(tmp_path):
    from backprop_cli.runs.sinks import CheckpointSink, Outcome

    writes = []
    path = tmp_path / "good.pt"
    path.write_text("the user's better model")
    sink = CheckpointSink(path, lambda p, step: writes.append((p.name, step)), None, 10, lambda: True)
    for step in range(1, 6):
        sink.record(_rec(step))
    assert writes == []  # no --save-every
    sink.close(Outcome("stopped", 5, 5, "non-finite value", failed=True))
    assert writes == [("good.last-good.pt", 5)]
    assert path.read_text() == "the user's better model"
    # past the last good step: nothing written at all
    sink = CheckpointSink(path, lambda p, step: writes.append((p.name, step)), None, 10, lambda: True)
    assert "not written" in sink.close(Outcome("stopped", 5, 6, "non-finite value", failed=True))["checkpoint"]
    assert writes == [("good.last-good.pt", 5)]
    # every save_every steps (not at the last step, written by close), then at the end
    sink = CheckpointSink(tmp_path / "run.pt", lambda p, step: writes.append((p.name, step)), 3, 7, lambda: True)
    for step in range(1, 8):
        sink.record(_rec(step))
    sink.close(Outcome("done", 7, 7))
    assert writes[1:] == [("run.pt", 3), ("run.pt", 6), ("run.pt", 7)]


def test_the_stages_complete_a_record_before_the_readers_see_it(cli, tmp_path):
    """The metrics file (an output, the last stage) holds the epoch_loss and val_loss that the first two
    stages put into the record, at the same steps as the console's summary says."""
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--steps", 20, "--set", "data.validation=0.25",
            "--set", "train.eval_every=5", "--metrics", tmp_path / "m.jsonl", "--format", "json")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if "val_loss" in x] == [5, 10, 15, 20]
    doc = json.loads(r.stdout)
    assert doc["summary"]["validation"]["loss"] == recs[-1]["val_loss"]
    assert any("epoch_loss" in x for x in recs)

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

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

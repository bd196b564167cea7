"""The CUDA path, on a machine with a GPU (skipped elsewhere; benchmarks/gpu_session.sh runs them).

BACKPROP_TEST_DEVICE=cpu runs the device-independent ones on the CPU, to check the tests themselves.
"""

import json
import math
import os

import pytest
import torch

from backprop_cli.core import engine
from backprop_cli.core.build import build_run, implementation_name
from backprop_cli.config import load_config
from conftest import CONFIGS, engine_records

DEVICE = os.environ.get("BACKPROP_TEST_DEVICE", "cuda")
REG = CONFIGS / "regression.yaml"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")
cuda_only = pytest.mark.skipif(DEVICE != "cuda", reason="checks CUDA itself")


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses(path):
    return torch.tensor([r["loss"] for r in records(path)], dtype=torch.float64)


def test_train_on_the_device_follows_the_cpu(cli, tmp_path):
    """Other kernels, same math: 40 steps of SGD with momentum agree to float32 rounding, amplified."""
    cpu, dev = tmp_path / "cpu.jsonl", tmp_path / "dev.jsonl"
    assert cli("train", "-c", REG, "--steps", 40, "--set", "device=cpu", "--metrics", cpu, "-q").exit_code == 0
    r = cli("train", "-c", REG, "--steps", 40, "--set", f"device={DEVICE}", "--metrics", dev)
    assert r.exit_code == 0, r.output
    assert f"device:     {DEVICE}" in r.stdout
    assert torch.allclose(losses(dev), losses(cpu), rtol=1e-3, atol=1e-5)
    assert [x["step"] for x in records(dev)] == list(range(1, 41))


def diagnostics(r, first, every):
    """train's per-layer diagnostics on its logging steps."""
    from backprop_cli.core.diagnostics import Diagnostics
    from backprop_cli.core.records import is_logging_step

    return Diagnostics.of(r.model, r.cfg.model.activation.name, lambda s: is_logging_step(s, first, every, r.steps))


def test_deferred_read_backs_give_the_records_of_one_read_per_step():
    """The accelerator policy (one read per 10 steps) changes when numbers arrive, not what they are,
    the diagnostics of the logging steps included."""
    def run(sync_every):
        cfg = load_config(REG, [f"device={DEVICE}", "train.steps=35", "train.clip_grad_norm=0.5",
                                "model.hidden_size=null", "model.hidden_sizes=[32, 32]"])
        r = build_run(cfg)
        return [x.as_dict() | {"time": 0} for x in engine_records(r.model, r.loss_fn, r.optimizer, r.batches, r.steps, sync_every=sync_every, clip_grad_norm=0.5,
                                                                  probe=diagnostics(r, 1, 10))]

    deferred = run(10)
    assert deferred == run(1)
    assert [x["step"] for x in deferred if "activations" in x] == [1, 10, 20, 30, 35]


@cuda_only
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_no_host_sync_between_read_backs(monkeypatch, precision):
    """torch.cuda.set_sync_debug_mode("error") outside the engine's read-backs: shuffled epochs (the
    permutation goes to the GPU from pinned memory), clipping, a schedule, Adam (fused), fp16's scaler and
    the per-layer diagnostics of the logging steps (riding on the same read-backs)."""
    cfg = load_config(REG, ["device=cuda", "data.samples=256", "train.steps=40", "train.clip_grad_norm=1.0",
                            "optimizer={name: adam, lr: 0.01}", "scheduler={name: step, step_size: 5}",
                            f"precision={precision}", "model.hidden_size=null", "model.hidden_sizes=[64, 64, 64]"])
    r = build_run(cfg)
    kw = dict(sync_every=10, clip_grad_norm=1.0, scheduler=r.scheduler, precision=precision,
              probe=diagnostics(r, 1, 10))
    for _ in engine_records(r.model, r.loss_fn, r.optimizer, r.batches, 2, **kw):
        pass  # first-call work (allocator, the scaler's first scale) outside the check
    torch.cuda.synchronize()
    real, reads = engine.read_back, []

    def allowed(t):
        torch.cuda.set_sync_debug_mode("default")
        try:
            reads.append(t.shape[0])
            return real(t)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(engine, "read_back", allowed)
    torch.cuda.set_sync_debug_mode("error")
    try:
        recs = list(engine_records(r.model, r.loss_fn, r.optimizer, r.batches, r.steps, start_step=2, **kw))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [x.step for x in recs] == list(range(3, 41))
    assert reads == [10, 10, 10, 8]
    assert all(math.isfinite(x.loss) for x in recs)
    assert [x.step for x in recs if x.activations is not None] == [10, 20, 30, 40]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "adagrad", "rmsprop"])
def test_the_optimizer_implementation_on_the_device(optimizer):
    cfg = load_config(REG, [f"device={DEVICE}", f"optimizer={{name: {optimizer}, lr: 0.01}}"])
    r = build_run(cfg)
    name = implementation_name(r.optimizer)
    if optimizer == "sgd":  # plain SGD: fused on CUDA; on the CPU its for-loop step is as fast (kernel_options)
        assert name == ("fused" if DEVICE == "cuda" else "for-loop")
    elif optimizer in ("adam", "adamw"):
        assert name == "fused"  # torch has these fused kernels on CPU and CUDA
    elif optimizer == "rmsprop":  # no fused RMSprop: torch's default
        assert name == ("foreach" if DEVICE == "cuda" else "for-loop")
    else:  # Adagrad: fused on the CPU; on CUDA where torch has it, else foreach
        assert name == "fused" if DEVICE == "cpu" else name in ("fused", "foreach")
    recs = list(engine_records(r.model, r.loss_fn, r.optimizer, r.batches, 20))
    assert recs[-1].loss < recs[0].loss


def test_a_cpu_checkpoint_resumes_on_the_device(cli, tmp_path):
    """Adagrad is fused on the CPU; where the device has no fused Adagrad the resumed run keeps the
    device's own implementation (checkpoint.load_optimizer)."""
    opt = "optimizer={name: adagrad, lr: 0.05}"
    full, rest, ck = tmp_path / "full.jsonl", tmp_path / "rest.jsonl", tmp_path / "half.pt"
    assert cli("train", "-c", REG, "--steps", 40, "--set", "device=cpu", "--set", opt, "--metrics", full,
               "-q").exit_code == 0
    assert cli("train", "-c", REG, "--steps", 20, "--set", "device=cpu", "--set", opt, "--save", ck,
               "-q").exit_code == 0
    r = cli("train", "-c", REG, "--steps", 40, "--set", f"device={DEVICE}", "--set", opt, "--resume", ck,
            "--metrics", rest)
    assert r.exit_code == 0, r.output
    assert [x["step"] for x in records(rest)] == list(range(21, 41))
    assert torch.allclose(losses(rest), losses(full)[20:], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(cli, tmp_path, precision):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 60, "--set", f"device={DEVICE}", "--set", f"precision={precision}",
            "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    recs = records(m)
    assert recs[-1]["loss"] < 0.5 * recs[0]["loss"]
    if precision == "fp16":
        assert all(x["loss_scale"] > 0 for x in recs)

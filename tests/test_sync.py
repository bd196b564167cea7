"""The accelerator path makes no host sync between its read-backs: checked on the CPU.

A TorchDispatchMode sees every operator the loop runs. It flags the ones that make the host wait for
the device on CUDA: reading a scalar (``.item()``, ``bool(t)``, ``float(t)``: ``_local_scalar_dense``),
data-dependent shapes (``nonzero``, boolean-mask indexing, ``masked_select``) and tensors made from
host values inside the loop (``torch.tensor(...)``: a host→device copy). The engine runs with the
accelerator policy (``sync_every`` > 1); the only reads allowed are its own, in ``engine.read_back``.
The optimizer's ``step`` counters are exempt: torch keeps them on the host (non-capturable
optimizers), so reading them costs no device sync. ``benchmarks/cuda_check.py`` checks the same on
a real GPU with ``torch.cuda.set_sync_debug_mode("error")``.
"""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from backprop_cli.core import engine
from backprop_cli.core.build import build_run
from backprop_cli.config import load_config
from conftest import CONFIGS, engine_records

aten = torch.ops.aten
SCALAR_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten.unique_consecutive.default,
                  aten._unique2.default}
FROM_HOST = {aten.lift_fresh.default}


class SyncSpy(TorchDispatchMode):
    """Records each operator that would make the host wait for an accelerator."""

    def __init__(self, optimizer):
        super().__init__()
        self.optimizer = optimizer
        self.found: list[str] = []
        self.allowed = False
        self.made: list[torch.Tensor] = []  # tensors made from host values, checked in .flagged()

    def _host_counter(self, t) -> bool:
        return any(s.get("step") is t for s in self.optimizer.state.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.allowed:
            first = args[0] if args else None
            if func in SCALAR_READS and not self._host_counter(first):
                self.found.append(str(func))
            elif func in DATA_DEPENDENT:
                self.found.append(str(func))
            elif func is aten.index.Tensor and any(
                    i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
                self.found.append("boolean-mask indexing")
        out = func(*args, **kwargs)
        if func in FROM_HOST and not self.allowed:
            self.made.append(out)
        return out

    def flagged(self) -> list[str]:
        """What was flagged, plus the tensors made from host values that are not step counters."""
        return self.found + [str(aten.lift_fresh.default) for t in self.made if not self._host_counter(t)]


def spied_records(run, steps, sync_every, monkeypatch, **kw):
    """Train under the spy; returns (records, flagged operators, number of read-backs)."""
    spy = SyncSpy(run.optimizer)
    reads = []
    real = engine.read_back

    def allowed(t):
        spy.allowed = True
        try:
            reads.append(len(t) if t.dim() > 1 else 1)
            return real(t)
        finally:
            spy.allowed = False

    monkeypatch.setattr(engine, "read_back", allowed)
    records = []
    gen = engine_records(run.model, run.loss_fn, run.optimizer, run.batches, steps, sync_every=sync_every, **kw)
    while True:  # the spy watches the loop only, not this consumer
        with spy:
            rec = next(gen, None)
        if rec is None:
            break
        records.append(rec.as_dict() | {"time": 0})
    return records, spy.flagged(), reads


def regression_run(*sets, optimizer=None):
    cfg = load_config(CONFIGS / "regression.yaml",
                      ["device=cpu", "data.samples=96", "data.batch_size=32", "train.steps=23", *sets])
    run = build_run(cfg)
    if optimizer is not None:
        run.optimizer = optimizer(run.model.parameters())
    return run


CASES = {
    "sgd momentum, clipping, step schedule, shuffled epochs": (
        ["train.clip_grad_norm=0.5", "scheduler={name: step, step_size: 5}"], None, "fp32", False),
    "adam, warm-up cosine, update ratio": (
        ["optimizer={name: adam, lr: 0.01}", "scheduler={name: warmup_cosine, warmup_steps: 4}"],
        None, "fp32", True),
    "adamw, bf16 autocast": (["optimizer={name: adamw, lr: 0.01}"], None, "bf16", False),
    "fp16 GradScaler with Adam (fused, as train builds it)": (
        ["optimizer={name: adam, lr: 0.01}", "train.clip_grad_norm=1.0"], None, "fp16", False),
}


CASES |= {
    "diagnostics on logging steps, sgd momentum, clipping": (
        ["train.clip_grad_norm=0.5", "model.hidden_size=null", "model.hidden_sizes=[16, 16, 16]",
         "model.activation=relu"], None, "fp32", False),
    "diagnostics with the update ratio, adam, bf16": (
        ["optimizer={name: adam, lr: 0.01}", "model.hidden_size=null", "model.hidden_sizes=[16, 16]"],
        None, "bf16", True),
}


def probe_of(run, case):
    """train's diagnostics on its logging steps (every 5th, the first and the last) for the diagnostics cases."""
    from backprop_cli.core.diagnostics import Diagnostics
    from backprop_cli.core.records import is_logging_step

    if not case.startswith("diagnostics"):
        return None
    return Diagnostics.of(run.model, run.cfg.model.activation.name, lambda s: is_logging_step(s, 1, 5, run.steps))


@pytest.mark.parametrize("case", CASES)
def test_no_host_sync_between_read_backs(case, monkeypatch):
    sets, optimizer, precision, measure = CASES[case]
    run = regression_run(*sets, optimizer=optimizer)
    if precision == "fp16":
        assert run.optimizer.defaults["fused"]
    clip = run.cfg.train.clip_grad_norm
    records, found, reads = spied_records(run, run.steps, 5, monkeypatch, scheduler=run.scheduler,
                                          clip_grad_norm=clip, precision=precision, measure_updates=measure,
                                          probe=probe_of(run, case))
    assert found == []
    # one read-back per 5 steps (the last one partial), each carrying that stretch's rows: the
    # diagnostics ride on it and add no read of their own
    assert reads == [5, 5, 5, 5, 3]
    assert [r["step"] for r in records] == list(range(1, 24))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    if measure:
        assert all(r["update_ratio"] > 0 for r in records)
    if case.startswith("diagnostics"):
        assert [r["step"] for r in records if "activations" in r] == [1, 5, 10, 15, 20, 23]
        assert all(0 < v < math.inf for r in records if "update_ratios" in r for v in r["update_ratios"].values())

    # and the records are those of the CPU policy (one read per step)
    again = regression_run(*sets, optimizer=optimizer)
    exact = [r.as_dict() | {"time": 0} for r in engine_records(again.model, again.loss_fn, again.optimizer, again.batches, again.steps, sync_every=1,
        scheduler=again.scheduler, clip_grad_norm=clip, precision=precision, measure_updates=measure,
        probe=probe_of(again, case))]
    assert records == exact


def test_on_the_cpu_diagnostics_cost_at_most_one_read_per_logging_step(monkeypatch):
    """The CPU policy reads every step before the update; a logging step adds one read for what is measured
    after it (the update ratios, with the activation statistics in the same read)."""
    run = regression_run("model.hidden_size=null", "model.hidden_sizes=[16, 16]")
    counted = []
    real = engine.read_back
    monkeypatch.setattr(engine, "read_back", lambda t: counted.append(1) or real(t))
    list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps, sync_every=1,
                        probe=probe_of(run, "diagnostics")))
    assert len(counted) == run.steps + 6  # 23 steps, 6 logging steps


def test_the_spy_catches_a_host_read_in_the_loop(monkeypatch):
    """The check can fail: a loss function that reads its value each step is caught."""
    run = regression_run()
    real = run.loss_fn

    class Chatty(torch.nn.Module):
        def forward(self, out, y):
            loss = real(out, y)
            if loss > 1e9:  # bool(tensor): a host read
                raise AssertionError
            return loss

    run.loss_fn = Chatty()
    _, found, _ = spied_records(run, 6, 5, monkeypatch)
    assert found.count("aten._local_scalar_dense.default") == 6


def test_the_spy_catches_the_grad_scaler_check_of_an_unfused_optimizer(monkeypatch):
    """Without a fused optimizer GradScaler.step reads its overflow flag every step (torch's own
    behaviour): one reason train builds fused optimizers."""
    run = regression_run(optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False))
    _, found, _ = spied_records(run, 6, 5, monkeypatch, precision="fp16")
    assert found.count("aten._local_scalar_dense.default") == 6


def test_the_spy_catches_a_tensor_made_from_host_values(monkeypatch):
    run = regression_run()
    real = run.loss_fn

    run.loss_fn = lambda out, y: real(out, y) * torch.tensor(1.0)
    _, found, _ = spied_records(run, 3, 5, monkeypatch)
    assert found == ["aten.lift_fresh.default"] * 3

"""The engine against a plain PyTorch loop written here, step for step."""

import copy

import pytest
import torch

from torch import nn

from backprop_cli.core.build import build_run
from backprop_cli.config import load_config, optimizer_hyperparams
from conftest import CONFIGS, engine_records


def plain_classic_run(steps=1, lr=0.01, zero_grad=True):
    """The classic example, written out by hand with the documented seeding recipe."""
    torch.manual_seed(0)  # model init: torch.manual_seed(seed), then construction
    model = nn.Sequential()
    model.add_module("layer1", nn.Linear(10, 20))
    model.add_module("activation", nn.ReLU())
    model.add_module("layer2", nn.Linear(20, 1))
    g = torch.Generator().manual_seed(0)  # data: its own generator, seeded with seed
    x = torch.randn(5, 10, generator=g)
    y = torch.randn(5, 1, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    out = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        out.append((loss.item(), grads))
    return model, out


def seed_run(**overrides):
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(CONFIGS / "seed.yaml", ["device=cpu"] + sets)
    return build_run(cfg)


def test_first_step_gradients_equal_a_plain_loop():
    run = seed_run()
    captured = {}
    real_step = run.optimizer.step

    def spy():
        captured.update({n: p.grad.clone() for n, p in run.model.named_parameters()})
        real_step()

    run.optimizer.step = spy
    (rec,) = list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps))
    _, [(loss, grads)] = plain_classic_run()
    assert rec.step == 1
    assert rec.loss == loss
    assert set(captured) == set(grads) == {"layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}
    for name in grads:
        assert torch.equal(captured[name], grads[name]), name
        assert rec.grad_norms[name] == pytest.approx(grads[name].norm().item(), rel=1e-6)
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads.values())).item()
    assert rec.grad_norm == pytest.approx(total, rel=1e-6)
    assert rec.lr == 0.01 and rec.time >= 0


def test_many_steps_match_the_plain_loop_and_the_weights_end_equal():
    run = seed_run(**{"train.steps": 25})
    recs = list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps))
    model, ref = plain_classic_run(steps=25)
    assert [r.loss for r in recs] == [loss for loss, _ in ref]
    for (n, p), (m, q) in zip(run.model.named_parameters(), model.named_parameters()):
        assert n == m and torch.equal(p, q)


def test_no_zero_grad_accumulates_like_the_plain_loop():
    run = seed_run(**{"train.steps": 3})
    recs = list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps, zero_grad=False))
    _, ref = plain_classic_run(steps=3, zero_grad=False)
    assert [r.loss for r in recs] == [loss for loss, _ in ref]
    assert recs[2].grad_norms["layer2.bias"] == pytest.approx(ref[2][1]["layer2.bias"].norm().item(), rel=1e-6)
    # accumulated: step 2's grad is step 1's grad plus a fresh one, so it is not the fresh one alone
    fresh = seed_run(**{"train.steps": 3})
    fresh_recs = list(engine_records(fresh.model, fresh.loss_fn, fresh.optimizer, fresh.batches, 3))
    assert recs[1].grad_norm != fresh_recs[1].grad_norm


def test_shuffled_minibatches_momentum_match_a_plain_loop():
    cfg = load_config(CONFIGS / "regression.yaml", ["device=cpu", "train.steps=40"])
    run = build_run(cfg)
    ref_model = copy.deepcopy(run.model)
    recs = list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps))

    x, y = run.dataset.x, run.dataset.y
    assert run.optimizer.defaults["fused"]  # train uses torch's fused kernel where there is one
    opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, fused=True)
    B, n = 64, x.shape[0]
    losses = []
    for i in range(40):
        epoch, k = divmod(i, n // B)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        xb, yb = x[perm][k * B:(k + 1) * B], y[perm][k * B:(k + 1) * B]
        loss = nn.functional.mse_loss(ref_model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert [r.loss for r in recs] == losses
    assert recs[-1].loss < recs[0].loss


def test_same_config_and_seed_give_bitwise_identical_losses():
    def losses():
        cfg = load_config(CONFIGS / "classification.yaml", ["device=cpu", "train.epochs=null", "train.steps=60"])
        run = build_run(cfg)
        return [r.loss for r in engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps)]

    a, b = losses(), losses()
    assert a == b and len(a) == 60


def test_deferred_reads_give_the_same_records():
    """Reading scalars back every k steps (the accelerator path) changes nothing but when."""
    def records(sync_every):
        run = seed_run(**{"train.steps": 7})
        return [r.as_dict() | {"time": 0} for r in engine_records(run.model, run.loss_fn, run.optimizer, run.batches,
                                                          run.steps, sync_every=sync_every)]

    assert records(3) == records(1)
    assert [r["step"] for r in records(3)] == list(range(1, 8))


def test_start_step_continues_numbering():
    run = seed_run(**{"train.steps": 5})
    recs = list(engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps, start_step=3))
    assert [r.step for r in recs] == [4, 5]


FUSED_CAPABLE = {
    "sgd, nesterov, weight decay": "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
    "adam, amsgrad": "{name: adam, lr: 0.01, amsgrad: true}",
    "adamw": "{name: adamw, lr: 0.01}",
    "adagrad, lr decay": "{name: adagrad, lr: 0.05, lr_decay: 0.01}",
}


@pytest.mark.parametrize("case", FUSED_CAPABLE)
def test_fused_kernels_do_the_same_math_as_torchs_reference_loop(case):
    """train builds the optimizer with fused=True where torch has that kernel; it follows torch's
    for-loop implementation (the reference) to float32 rounding over 40 steps."""
    cfg = load_config(CONFIGS / "regression.yaml", ["device=cpu", "train.steps=40", f"optimizer={FUSED_CAPABLE[case]}"])
    run = build_run(cfg)
    assert run.optimizer.defaults["fused"] is True
    ref = build_run(cfg)
    ref.optimizer = type(ref.optimizer)(ref.model.parameters(), **optimizer_hyperparams(cfg.optimizer),
                                        foreach=False)
    ours = [r.loss for r in engine_records(run.model, run.loss_fn, run.optimizer, run.batches, run.steps)]
    theirs = [r.loss for r in engine_records(ref.model, ref.loss_fn, ref.optimizer, ref.batches, ref.steps)]
    assert ours[0] == theirs[0]
    assert torch.allclose(torch.tensor(ours), torch.tensor(theirs), rtol=1e-5, atol=1e-7)
    for a, b in zip(run.model.parameters(), ref.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours[-1] < 0.5 * ours[0]  # and it trains


def test_an_optimizer_without_a_fused_kernel_gets_torchs_default(cli):
    cfg = load_config(CONFIGS / "regression.yaml", ["device=cpu", "optimizer={name: rmsprop, lr: 0.01}"])
    opt = build_run(cfg).optimizer
    assert not opt.defaults.get("fused") and opt.defaults["foreach"] is False
    # the start of a run says which implementation it uses
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--set", "device=cpu", "--set", "optimizer=rmsprop", "--steps", 1)
    assert r.exit_code == 0 and "for-loop implementation" in r.stdout
    r = cli("train", "-c", CONFIGS / "regression.yaml", "--set", "device=cpu", "--steps", 1)
    assert r.exit_code == 0 and "fused implementation" in r.stdout


def test_the_kernel_is_chosen_by_measurement_and_shared_by_a_comparison():
    """benchmarks/bench_optimizers.py: fused wherever torch has it, except plain SGD on the CPU (its
    for-loop step is as fast or faster at every size); a comparison shares one kernel across its runs."""
    from backprop_cli.core.build import kernel_options
    from backprop_cli.config import parse_optimizer

    cpu = torch.device("cpu")
    spec = parse_optimizer
    assert kernel_options([spec("sgd:lr=0.1")], cpu) == {"foreach": False}
    assert kernel_options([spec("sgd:lr=0.1"), spec("sgd:lr=0.5")], cpu) == {"foreach": False}
    for fused in ("sgd:lr=0.1,momentum=0.9", "sgd:lr=0.1,weight_decay=0.01", "adam", "adamw", "adagrad"):
        assert kernel_options([spec(fused)], cpu) == {"fused": True}, fused
        assert kernel_options([spec("sgd:lr=0.1"), spec(fused)], cpu) == {"fused": True}, fused
    assert kernel_options([spec("rmsprop")], cpu) == {"foreach": False}
    assert kernel_options([spec("adam"), spec("rmsprop")], cpu) == {"foreach": False}
    assert build_run(load_config(CONFIGS / "seed.yaml", ["device=cpu"])).optimizer.defaults["foreach"] is False

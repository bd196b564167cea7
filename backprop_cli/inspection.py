"""inspect-grads and check-grads: a model at a given batch, its gradients measured and checked.

Stops before ``optimizer.step()``: the gradients are exactly what the next step would use.
Nothing here prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from backprop_cli.build import Run, build_run
from backprop_cli.checkpoint import load_checkpoint, load_optimizer, load_weights
from backprop_cli.config import Config
from backprop_cli.engine import train
from backprop_cli.grads import (compare, finite_differences, grad_statistics, manual_backward,
                                nonfinite_count, tolerance)

NORM_RATIO_WARNING = 1000.0
FULL_CHECK_LIMIT = 20_000  # parameters: above this, finite differences sample elements


@dataclass
class Probe:
    run: Run
    batch_index: int
    x: torch.Tensor
    y: torch.Tensor
    loss: float
    hidden: torch.Tensor  # layer1's output z1 for this batch, before the activation


def prepare(cfg: Config, checkpoint: Optional[Path] = None, steps: int = 0) -> tuple[Run, int]:
    """Build the run (weights from the checkpoint if given), train ``steps`` more; returns (run, steps done)."""
    run = build_run(cfg)
    done = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        load_weights(run.model, state, checkpoint)
        load_optimizer(run.optimizer, state, checkpoint)
        done = int(state["step"])
    if steps:
        for _ in train(run.model, run.loss_fn, run.optimizer, run.batches, done + steps, start_step=done):
            pass
        done += steps
    return run, done


def backward_at(run: Run, index: int, zero_grad: bool = True) -> Probe:
    """forward → loss → zero_grad → backward on batch ``index``; no optimizer step."""
    x, y = run.batches(index)
    seen = {}
    hook = run.model.layer1.register_forward_hook(lambda m, i, o: seen.__setitem__("z1", o.detach()))
    try:
        run.model.train()
        loss = run.loss_fn(run.model(x), y)
    finally:
        hook.remove()
    if zero_grad:
        run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return Probe(run, index, x, y, loss.item(), seen["z1"])


# --------------------------------------------------------------------------- inspect-grads


def flags(probe: Probe, stats: dict[str, dict]) -> list[str]:
    """Things a user should see: unused parameters, all-zero or non-finite grads, dead ReLUs, norm gaps."""
    out = []
    named = dict(probe.run.model.named_parameters())
    for name, s in stats.items():
        g = named[name].grad
        if g is None:
            out.append(f"{name}: .grad is None (the parameter is not used by the loss)")
            continue
        bad = nonfinite_count(g)
        if bad:
            out.append(f"{name}: {bad} non-finite gradient value(s)")
        elif s["zero_fraction"] == 1.0:
            out.append(f"{name}: the gradient is all zeros")
    if probe.run.cfg.model.activation.name == "relu":
        dead = int((probe.hidden <= 0).all(dim=0).sum())
        if dead:
            width = probe.hidden.shape[1]
            out.append(f"dead ReLU units: {dead} of {width} hidden units ({100 * dead / width:.0f}%) output 0 "
                       "for every sample in this batch, so their weights get no gradient")
    layer_norms = {}
    for layer in ("layer1", "layer2"):
        parts = [stats[n]["norm"] for n in stats if n.startswith(layer + ".")
                 and stats[n]["norm"] is not None and math.isfinite(stats[n]["norm"])]
        if parts:
            layer_norms[layer] = math.sqrt(sum(v * v for v in parts))
    if len(layer_norms) == 2:
        lo, hi = sorted(layer_norms.items(), key=lambda kv: kv[1])
        if lo[1] == 0 or hi[1] / lo[1] > NORM_RATIO_WARNING:
            ratio = "infinitely" if lo[1] == 0 else f"{hi[1] / lo[1]:.3g}×"
            out.append(f"{lo[0]}'s gradient norm is {ratio} smaller than {hi[0]}'s (vanishing or exploding gradients?)")
    return out


def clip_copy(grads: dict[str, torch.Tensor], max_norm: float) -> tuple[dict[str, torch.Tensor], float, float]:
    """What ``clip_grad_norm_(max_norm)`` would make of these gradients (on copies)."""
    copies = {n: g.detach().clone() for n, g in grads.items()}
    holders = []
    for g in copies.values():
        t = torch.nn.Parameter(torch.empty_like(g))
        t.grad = g
        holders.append(t)
    before = float(torch.nn.utils.clip_grad_norm_(holders, max_norm))
    after = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in copies.values()])))
    return copies, before, after


def inspect_gradients(run: Run, index: int, clip: Optional[float] = None) -> dict:
    """Everything inspect-grads shows, as data (tensors under ``grads``/``weights``)."""
    probe = backward_at(run, index)
    named = list(run.model.named_parameters())
    stats = grad_statistics(named)
    grads = {n: p.grad.detach().cpu() for n, p in named if p.grad is not None}
    result = {
        "loss": probe.loss,
        "batch": {"index": index, "size": int(probe.x.shape[0])},
        "params": stats,
        "grads": grads,
        "weights": {n: p.detach().cpu().clone() for n, p in named},
        "flags": flags(probe, stats),
    }
    if clip is not None:
        clipped, before, after = clip_copy(grads, clip)
        result["clip"] = {"max_norm": clip, "total_norm_before": before, "total_norm_after": after,
                          "clipped": before > clip,
                          "norms": {n: float(torch.linalg.vector_norm(g)) for n, g in clipped.items()},
                          "grads": clipped}
    return result


# --------------------------------------------------------------------------- check-grads


def check_gradients(run: Run, index: int, samples: Optional[int] = None, h: float = 1e-6,
                    seed: int = 0) -> dict:
    """autograd vs the hand-written chain rule vs float64 central differences, per parameter."""
    cfg = run.cfg
    probe = backward_at(run, index)
    named = list(run.model.named_parameters())
    dtype = named[0][1].dtype
    autograd = {n: p.grad.detach().cpu() for n, p in named}

    w64 = {n: p.detach().cpu().double().clone() for n, p in named}
    x64 = probe.x.detach().cpu().double()
    y = probe.y.detach().cpu()
    y64 = y if y.dtype == torch.int64 else y.double()
    chain = manual_backward(w64, x64, y64, cfg.model.activation, cfg.loss)

    from backprop_cli.build import make_loss
    from backprop_cli.model import TwoLayerNet, make_activation

    m = cfg.model
    ref = TwoLayerNet(m.input_size, m.hidden_size, m.output_size, make_activation(m.activation), m.bias).double()
    ref.load_state_dict(w64)
    params64 = dict(ref.named_parameters())
    loss_fn = make_loss(cfg.loss)

    def loss_of() -> torch.Tensor:
        return loss_fn(ref(x64), y64)

    total = sum(p.numel() for _, p in named)
    gen = torch.Generator().manual_seed(seed)
    picks: dict[str, Optional[torch.Tensor]] = {}
    for n, p in named:
        if (samples is None and total <= FULL_CHECK_LIMIT) or (samples is not None and samples >= p.numel()):
            picks[n] = None
        else:
            k = min(p.numel(), samples if samples is not None else 256)
            picks[n] = torch.randperm(p.numel(), generator=gen)[:k].sort().values
    fd = finite_differences(loss_of, {n: t.data for n, t in params64.items()}, picks, h)
    fd_atol = 10 * torch.finfo(torch.float64).eps * max(1.0, abs(probe.loss)) / h

    params = {}
    for n, _ in named:
        a = autograd[n].reshape(-1)
        a_sel = a if picks[n] is None else a[picks[n]]
        c = compare(a, chain[n], dtype)
        f = compare(a_sel, fd[n], dtype, atol=fd_atol)
        params[n] = {
            "chain_rule": {"max_abs": c["max_abs"], "max_rel": c["max_rel"]},
            "finite_diff": {"max_abs": f["max_abs"], "max_rel": f["max_rel"], "checked": int(fd[n].numel())},
            "pass": c["pass"] and f["pass"],
            "elements": int(a.numel()),
        }
    rtol, atol_frac = tolerance(dtype)
    return {"loss": probe.loss, "pass": all(p["pass"] for p in params.values()), "params": params,
            "batch": {"index": index, "size": int(probe.x.shape[0])},
            "tolerance": {"dtype": str(dtype).replace("torch.", ""), "rtol": rtol, "atol_fraction_of_max": atol_frac,
                          "finite_diff_step": h}}



# --------------------------------------------------------------------------- documents and dumps

DUMP_SUFFIXES = (".pt", ".npz", ".json")


def inspect_document(result: dict) -> dict:
    """The `inspect-grads --format json` document (gradients as nested lists)."""
    params = {}
    for name, s in result["params"].items():
        g = result["grads"].get(name)
        params[name] = {k: _finite(s.get(k)) for k in ("shape", "norm", "mean", "std", "min", "max", "abs_max",
                                                         "zero_fraction", "grad_to_weight")}
        params[name]["grad"] = None if g is None else _finite(g.tolist())
    doc = {"loss": _finite(result["loss"]), "batch": dict(result["batch"]), "params": params,
           "flags": list(result["flags"])}
    clip = result.get("clip")
    if clip is not None:
        doc["clip"] = {"max_norm": clip["max_norm"], "total_norm_before": clip["total_norm_before"],
                       "total_norm_after": clip["total_norm_after"], "clipped": clip["clipped"],
                       "params": {n: {"norm": clip["norms"][n], "grad": _finite(g.tolist())}
                                  for n, g in clip["grads"].items()}}
    return doc


def _finite(v):
    """JSON has no NaN/inf: they become null."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def dump_gradients(path: Path, result: dict) -> None:
    """``.pt``: torch.save({name: grad, "weights": {...}, "loss": float}); ``.npz``: one array per
    parameter; ``.json``: the inspect-grads JSON document. Written atomically."""
    import json

    from backprop_cli.outputs import AtomicFile, check_writable

    path = check_writable(Path(path), DUMP_SUFFIXES, "gradient dump")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        with AtomicFile(path, "wb") as f:
            torch.save({**result["grads"], "weights": result["weights"], "loss": result["loss"]}, f.file)
    elif suffix == ".npz":
        import numpy as np

        with AtomicFile(path, "wb") as f:
            np.savez(f.file, **{n: g.numpy() for n, g in result["grads"].items()})
    else:
        with AtomicFile(path, "w") as f:
            json.dump(inspect_document(result), f.file, indent=2)

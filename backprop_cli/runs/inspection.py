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

from backprop_cli.core.build import Run, build_run, make_loss
from backprop_cli.runs.resume import SCHEDULE_POSITION
from backprop_cli.io.checkpoint import load_checkpoint, load_optimizer, load_weights
from backprop_cli.core.components import ACTIVATIONS
from backprop_cli.config import Config, is_classification
from backprop_cli.data.tables import Table
from backprop_cli.core.engine import run_steps
from backprop_cli.core.grads import (compare, finite_differences, grad_statistics, manual_backward,
                                nonfinite_count, tolerance)
from backprop_cli.core.model import Net

NORM_RATIO_WARNING = 1000.0
FULL_CHECK_LIMIT = 20_000  # parameters: above this, finite differences sample elements


@dataclass
class Probe:
    run: Run
    batch_index: int
    x: torch.Tensor
    y: torch.Tensor
    loss: float
    hidden: dict[str, torch.Tensor]  # each hidden layer's output z for this batch, before the activation


def prepare(cfg: Config, checkpoint: Optional[Path] = None, train_steps: int = 0,
            table: Optional[Table] = None) -> tuple[Run, int]:
    """Build the run (weights, optimizer and schedule position from the checkpoint if given), then train
    ``train_steps`` more with the config's own options (the engine of ``train``); returns (run, steps done).
    ``table``: the data, when it was read already."""
    run = build_run(cfg, dataset=table)
    done = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, expected_params=sum(p.numel() for p in run.model.parameters()))
        load_weights(run.model, state, checkpoint)
        load_optimizer(run.optimizer, state, checkpoint)
        if run.scheduler is not None and isinstance(state.get("scheduler"), dict):
            for key in SCHEDULE_POSITION:
                if key in state["scheduler"]:
                    setattr(run.scheduler, key, state["scheduler"][key])
        done = int(state["step"])
    if train_steps:
        for _ in run_steps(run.loop(), done + train_steps, start_step=done, guard=run.guard):
            pass
        done += train_steps
    return run, done


def backward_at(run: Run, index: int, zero_grad: bool = True) -> Probe:
    """forward → loss → zero_grad → backward on batch ``index``; no optimizer step."""
    x, y = run.batches(index)
    seen: dict[str, torch.Tensor] = {}
    hidden = run.model.layers[:-1]
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(f"layer{k}", o.detach()))
             for k, layer in enumerate(hidden, start=1)]
    try:
        run.model.train()
        loss = run.loss_fn(run.model(x), y)
    finally:
        for hook in hooks:
            hook.remove()
    if zero_grad:
        run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return Probe(run, index, x, y, loss.item(), seen)


# --------------------------------------------------------------------------- inspect-grads

SCALE_RATIO_WARNING = 100.0


def scale_warnings(run: Run) -> list[str]:
    """Raw input columns whose spreads differ by more than 100× (when the inputs are not standardized)."""
    table = getattr(run.dataset, "table", None)
    if table is None or table.raw_std is None or run.cfg.data.standardize:
        return []
    std = {n: float(s) for n, s in zip(table.feature_names, table.raw_std) if s > 0}
    if len(std) < 2:
        return []
    lo, hi = min(std, key=std.get), max(std, key=std.get)
    ratio = std[hi] / std[lo]
    if ratio <= SCALE_RATIO_WARNING:
        return []
    return [f"input columns differ in scale by {ratio:.3g}× (std of {hi!r} {std[hi]:.4g}, of {lo!r} {std[lo]:.4g}): "
            "the larger ones dominate the first layer's gradients; set data.standardize: true"]



def grad_warnings(probe: Probe, stats: dict[str, dict]) -> list[str]:
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
        deep = len(probe.hidden) > 1
        for layer, z in probe.hidden.items():
            dead = int((z <= 0).all(dim=0).sum())
            if dead:
                width = z.shape[1]
                where = f" in {layer}" if deep else ""
                out.append(f"dead ReLU units{where}: {dead} of {width} hidden units ({100 * dead / width:.0f}%) "
                           "output 0 for every sample in this batch, so their weights get no gradient")
    out += scale_warnings(probe.run)
    layer_norms = {}
    for layer in [f"layer{k}" for k in range(1, len(probe.run.model.layers) + 1)]:
        parts = [stats[n]["norm"] for n in stats if n.startswith(layer + ".")
                 and stats[n]["norm"] is not None and math.isfinite(stats[n]["norm"])]
        if parts:
            layer_norms[layer] = math.sqrt(sum(v * v for v in parts))
    if len(layer_norms) >= 2:
        ordered = sorted(layer_norms.items(), key=lambda kv: kv[1])
        lo, hi = ordered[0], ordered[-1]
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


def inspect_gradients(run: Run, index: int, clip: Optional[float] = None, full: bool = False,
                      linewidth: int = 120) -> dict:
    """Everything inspect-grads shows, as data (tensors under ``grads``/``weights``; the values as
    torch prints them, in lines of at most ``linewidth`` characters, under ``text``: whole when small
    or ``full``, corners otherwise)."""
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
        "warnings": grad_warnings(probe, stats),
        "text": {n: tensor_text(g, full, linewidth) for n, g in grads.items()},
    }
    if clip is not None:
        clipped, before, after = clip_copy(grads, clip)
        result["clip"] = {"max_norm": clip, "total_norm_before": before, "total_norm_after": after,
                          "clipped": before > clip,
                          "norms": {n: float(torch.linalg.vector_norm(g)) for n, g in clipped.items()},
                          "grads": clipped, "text": {n: tensor_text(g, full, linewidth) for n, g in clipped.items()}}
    return result


def tensor_text(t: torch.Tensor, full: bool, linewidth: int = 120) -> str:
    """A gradient's values, as torch prints them: whole when small (or ``full``), corners otherwise."""
    with torch._tensor_str.printoptions(threshold=math.inf if full else 64, edgeitems=3, precision=4,
                                        linewidth=linewidth, sci_mode=None):
        return repr(t)


# --------------------------------------------------------------------------- check-grads


def scaling_advice(cfg: Config) -> str:
    """The config keys that scale the data: the targets too only where the task has real-valued ones
    (the config refuses standardize_target for classification)."""
    return ("data.standardize: true" if is_classification(cfg.loss) else
            "data.standardize: true, data.standardize_target: true")


def check_gradients(run: Run, index: int, samples: Optional[int] = None, h: float = 1e-6,
                    seed: int = 0) -> dict:
    """autograd vs the hand-written chain rule vs float64 central differences, per parameter."""
    cfg = run.cfg
    if getattr(run.model, "encoder", None) is not None:
        from backprop_cli.errors import ConfigError

        raise ConfigError("check-grads: the hand-written chain rule covers the linear layers only, and this model "
                          "embeds category columns (encoding: embedding); use encoding: onehot to check it")
    probe = backward_at(run, index)
    named = list(run.model.named_parameters())
    dtype = named[0][1].dtype
    autograd = {n: p.grad.detach().cpu() for n, p in named}

    w64 = {n: p.detach().cpu().double().clone() for n, p in named}
    x64 = probe.x.detach().cpu().double()
    y = probe.y.detach().cpu()
    y64 = y if y.dtype == torch.int64 else y.double()
    chain = manual_backward(w64, x64, y64, cfg.model.activation, cfg.loss)

    m = cfg.model
    ref = Net(m.widths, ACTIVATIONS[m.activation.name].module(m.activation), m.bias).double()
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
    with torch.no_grad():
        loss64 = float(loss_of())
    # central differences carry round-off of about eps·|L|/h: below that they resolve nothing
    fd_atol = 10 * torch.finfo(torch.float64).eps * max(1.0, abs(loss64)) / h

    problems = []
    if not math.isfinite(probe.loss):
        problems.append(f"the loss is {probe.loss} in {str(dtype).replace('torch.', '')}: the model's numbers "
                        f"overflow, so its gradients cannot be trusted; scale the data ({scaling_advice(run.cfg)}) "
                        "or lower the weights")
    params = {}
    for n, _ in named:
        a = autograd[n].reshape(-1)
        a_sel = a if picks[n] is None else a[picks[n]]
        c = compare(a, chain[n], dtype)
        f = compare(a_sel, fd[n], dtype, atol=fd_atol)
        largest = float(a.abs().max()) if a.numel() else 0.0
        resolved = math.isfinite(fd_atol) and not (largest > 0 and fd_atol >= largest)
        if not resolved:
            problems.append(f"{n}: finite differences cannot resolve its gradients (largest {largest:.3g}) next "
                            f"to a loss of {loss64:.3g}: their round-off is about {fd_atol:.3g}")
        params[n] = {
            "chain_rule": {"max_abs": c["max_abs"], "max_rel": c["max_rel"]},
            "finite_diff": {"max_abs": f["max_abs"], "max_rel": f["max_rel"], "checked": int(fd[n].numel()),
                            "resolved": resolved},
            "pass": c["pass"] and f["pass"] and resolved and math.isfinite(probe.loss),
            "elements": int(a.numel()),
        }
    rtol, atol_frac = tolerance(dtype)
    return {"loss": probe.loss, "pass": all(p["pass"] for p in params.values()), "params": params,
            "problems": problems,
            "batch": {"index": index, "size": int(probe.x.shape[0])},
            "tolerance": {"dtype": str(dtype).replace("torch.", ""), "rtol": rtol, "atol_fraction_of_max": atol_frac,
                          "finite_diff_step": h}}



# --------------------------------------------------------------------------- documents and dumps



def dump_gradients(path: Path, result: dict, json_document: str) -> None:
    """``.pt``: torch.save({name: grad, "weights": {...}, "loss": float}); ``.npz``: one array per
    parameter; ``.json``: the inspect-grads JSON document (``json_document``, built by the caller). Written
    atomically."""
    from backprop_cli.io.paths import DUMP_SUFFIXES, check_writable
    from backprop_cli.io.atomic import AtomicFile

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
            f.file.write(json_document)

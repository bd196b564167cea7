"""Gradient measurements. Measuring never changes a gradient (changing them lives elsewhere)."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch

from backprop_cli.core.components import ACTIVATIONS, DROPOUT, LOSSES, NORMS, RESIDUAL


def zero_grads(params: Iterable[torch.Tensor]) -> None:
    """``p.grad = None`` for each parameter: what ``optimizer.zero_grad(set_to_none=True)`` does for the
    optimizer's parameters, without its per-call profiler and dynamo wrappers (about 10 µs a step)."""
    for p in params:
        p.grad = None


def grads_of(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each parameter's .grad (a zero scalar for a parameter that got none)."""
    out = []
    for p in params:
        g = p.grad
        out.append(g if g is not None else torch.zeros((), device=p.device, dtype=p.dtype))
    return out


def per_tensor_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms as one 1-D tensor, from a single foreach kernel launch (as clip_grad does)."""
    if not grads:
        return torch.zeros(0)
    return torch.stack(torch._foreach_norm(grads, 2.0))


def step_stats(loss: torch.Tensor, grads: list[torch.Tensor], scale: torch.Tensor | None = None) -> torch.Tensor:
    """``[loss, total grad norm, norm of each grad..., (loss scale)]`` as one tensor on the grads' device.

    The total L2 norm is the norm of the per-tensor norms, exactly what
    ``torch.nn.utils.clip_grad_norm_`` measures. Reading this tensor back is the only host sync.
    """
    per = per_tensor_norms(grads)
    total = torch.linalg.vector_norm(per, 2.0)
    parts = [loss.detach().float().reshape(1).to(per.dtype), total.reshape(1), per]
    if scale is not None:
        parts.append(scale.to(device=per.device, dtype=per.dtype).reshape(1))
    return torch.cat(parts)


def clip_grads_(grads: list[torch.Tensor], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients in place so their total norm is at most ``max_norm``, given the measured norm.

    The same rule as ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6),
    clamped to 1), computed on the device with no host sync.
    """
    coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)


def update_ratio(before: list[torch.Tensor], after: list[torch.Tensor]) -> torch.Tensor:
    """‖w_after − w_before‖ / ‖w_before‖ over all tensors together (0-d, on the device)."""
    deltas = torch._foreach_sub([a.detach() for a in after], before)
    num = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas, 2.0)))
    den = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before, 2.0)))
    return num / den


# --------------------------------------------------------------------------- statistics

STAT_KEYS = ("norm", "mean", "std", "min", "max", "abs_max", "zero_fraction", "grad_to_weight")


def grad_statistics(named: list[tuple[str, torch.nn.Parameter]]) -> dict[str, dict]:
    """Per parameter: shape and the statistics of its .grad (None where the parameter got no gradient).

    All numbers come back to the host in one read.
    """
    out: dict[str, dict] = {}
    rows, have = [], []
    for name, p in named:
        out[name] = {"shape": list(p.shape)}
        g = p.grad
        if g is None:
            continue
        g = g.detach().float()
        w = p.detach().float()
        gnorm = torch.linalg.vector_norm(g)
        rows.append(torch.stack([
            gnorm, g.mean(), g.std(unbiased=False) if g.numel() > 0 else g.new_zeros(()),
            g.min(), g.max(), g.abs().max(), (g == 0).float().mean(),
            gnorm / torch.linalg.vector_norm(w),
        ]))
        have.append(name)
    if rows:
        for name, values in zip(have, torch.stack(rows).cpu().tolist()):
            out[name].update(zip(STAT_KEYS, values))
    for name in out:
        out[name].setdefault("norm", None)
    return out


def nonfinite_count(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum())


# --------------------------------------------------------------------------- the chain rule by hand


def manual_backward(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    activation, loss, *, norm: str = "none", masks: Optional[dict[int, torch.Tensor]] = None,
                    dropout: Optional[list[float]] = None, residual: Iterable[int] = ()) -> dict[str, torch.Tensor]:
    """The gradients of a ``layer1 … layerN`` net by the chain rule, block by block, with no autograd.

    forward, hidden block k (h_0 = x):  z_k = h_{k-1}·W_kᵀ + b_k,  u_k = norm(z_k),  a_k = f(u_k),
              d_k = a_k·m_k/(1−p_k) (dropout with the fixed keep-mask m_k),  h_k = h_{k-1} + d_k (skip) or d_k;
              the last layer: ŷ = h_{N-1}·W_Nᵀ + b_N
    backward: g = dL/dŷ;  dW_N = gᵀ·h_{N-1},  db_N = Σ g,  δh = g·W_N;  for k = N−1 … 1:
              δa = δh·m_k/(1−p_k),  δu = δa ⊙ f′(u_k),  (δz, dγ_k, dβ_k) = norm′(δu),
              dW_k = δzᵀ·h_{k-1},  db_k = Σ δz,  δh ← δz·W_k (+ δh, the skip's share, where k has one)
    Without norm, dropout or skips this is the classic δ_{k-1} = (δ_k·W_k) ⊙ f′(z_{k-1}). Each f and f′,
    dL/dŷ, norm and norm′ (batch norm in training mode: through the batch mean and variance), dropout and
    skip come from ``backprop_cli.core.components``. ``residual``: the blocks with a skip;
    ``masks``/``dropout``: block k → its keep-mask and p (blocks without dropout absent).
    """
    act = ACTIVATIONS[activation.name]
    opts = activation.model_dump()
    depth = sum(1 for name in weights if name.startswith("layer") and name.endswith(".weight"))
    skips = set(residual)
    masks = masks or {}
    with torch.no_grad():
        hs, us, acts, caches = [x], [], [], []
        for k in range(1, depth):
            z = hs[-1] @ weights[f"layer{k}.weight"].T
            if f"layer{k}.bias" in weights:
                z = z + weights[f"layer{k}.bias"]
            cache = None
            if norm != "none":
                z, cache = NORMS[norm].forward(z, weights[f"norm{k}.weight"], weights[f"norm{k}.bias"])
            a = act.forward(z, opts)
            us.append(z)
            acts.append(a)
            caches.append(cache)
            d = DROPOUT.forward(a, masks[k], dropout[k - 1]) if k in masks else a
            hs.append(RESIDUAL.forward(hs[-1], d) if k in skips else d)
        y_hat = hs[-1] @ weights[f"layer{depth}.weight"].T
        if f"layer{depth}.bias" in weights:
            y_hat = y_hat + weights[f"layer{depth}.bias"]
        g = LOSSES[loss.name].gradient(y_hat, y, loss)
        grads: dict[str, torch.Tensor] = {f"layer{depth}.weight": g.T @ hs[depth - 1]}
        if f"layer{depth}.bias" in weights:
            grads[f"layer{depth}.bias"] = g.sum(dim=0)
        dh = g @ weights[f"layer{depth}.weight"]
        for k in range(depth - 1, 0, -1):
            skip, dd = RESIDUAL.backward(dh) if k in skips else (None, dh)
            da = DROPOUT.backward(dd, masks[k], dropout[k - 1]) if k in masks else dd
            dz = da * act.derivative(us[k - 1], acts[k - 1], opts)
            if norm != "none":
                dz, grads[f"norm{k}.weight"], grads[f"norm{k}.bias"] = NORMS[norm].backward(dz, caches[k - 1])
            grads[f"layer{k}.weight"] = dz.T @ hs[k - 1]
            if f"layer{k}.bias" in weights:
                grads[f"layer{k}.bias"] = dz.sum(dim=0)
            if k > 1:
                dh = dz @ weights[f"layer{k}.weight"]
                if skip is not None:
                    dh = dh + skip
    return {name: grads[name] for name in weights}


# --------------------------------------------------------------------------- finite differences


def finite_differences(loss_of: "Callable[[], torch.Tensor]", params: dict[str, torch.Tensor],
                       samples: dict[str, torch.Tensor | None], h: float = 1e-6) -> dict[str, torch.Tensor]:
    """Central differences (L(w+h) − L(w−h)) / 2h for the chosen flat indices of each tensor.

    ``params`` are float64 tensors that ``loss_of`` reads; each is nudged in place and restored.
    ``samples[name]`` is a 1-D index tensor, or None for every element. Returns flat estimates in
    the order of the indices.
    """
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            flat = p.view(-1)
            idx = samples.get(name)
            indices = range(flat.numel()) if idx is None else idx.tolist()
            est = torch.empty(len(indices), dtype=torch.float64)
            for k, i in enumerate(indices):
                old = flat[i].item()
                flat[i] = old + h
                plus = loss_of().item()
                flat[i] = old - h
                minus = loss_of().item()
                flat[i] = old
                est[k] = (plus - minus) / (2 * h)
            out[name] = est
    return out


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol as a fraction of the tensor's largest |grad|) for gradients computed in ``dtype``.

    √eps of the dtype: float32 → 3.5e-4, float64 → 1.5e-8.
    """
    eps = torch.finfo(dtype).eps
    return math.sqrt(eps), 0.1 * math.sqrt(eps)


def compare(reference: torch.Tensor, other: torch.Tensor, dtype: torch.dtype, atol: float = 0.0) -> dict:
    """max |a−b|, max relative error, and whether every element is within the dtype's tolerance.

    ``atol`` adds an absolute allowance (finite differences carry round-off of about eps·|L|/h).
    """
    ref = reference.detach().double().reshape(-1).cpu()
    oth = other.detach().double().reshape(-1).cpu()
    if ref.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "pass": True}
    rtol, atol_frac = tolerance(dtype)
    scale = float(ref.abs().max())
    err = (ref - oth).abs()
    floor = max(scale * 1e-3, torch.finfo(dtype).tiny)
    rel = err / torch.maximum(torch.maximum(ref.abs(), oth.abs()), torch.tensor(floor, dtype=torch.float64))
    ok = bool((err <= atol + atol_frac * scale + rtol * ref.abs()).all()) and bool(torch.isfinite(oth).all())
    return {"max_abs": float(err.max()), "max_rel": float(rel.max()), "pass": ok}

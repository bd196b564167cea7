"""Gradient measurements. Measuring never changes a gradient (changing them lives elsewhere)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


def grads_of(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each parameter's .grad (a zero scalar for a parameter that got none)."""
    out = []
    for p in params:
        g = p.grad
        out.append(g if g is not None else torch.zeros((), device=p.device, dtype=p.dtype))
    return out


def grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms as one 1-D tensor, from a single foreach kernel launch (as clip_grad does)."""
    if not grads:
        return torch.zeros(0)
    return torch.stack(torch._foreach_norm(grads, 2.0))


def step_stats(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """``[loss, total grad norm, norm of each grad...]`` as one float32 tensor on the grads' device.

    The total L2 norm is the norm of the per-tensor norms, exactly what
    ``torch.nn.utils.clip_grad_norm_`` measures. Reading this tensor back is the only host sync.
    """
    per = grad_norms(grads)
    total = torch.linalg.vector_norm(per, 2.0)
    return torch.cat([loss.detach().reshape(1).to(per.dtype), total.reshape(1), per])


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
#
# Each activation and loss carries its own small backward, written out (micrograd-style). These
# tables are module-level so a test can swap in a wrong derivative and watch check-grads fail.

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_tanh_grad(z: torch.Tensor) -> torch.Tensor:
    inner = SQRT_2_OVER_PI * (z + 0.044715 * z**3)
    t = torch.tanh(inner)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z**2)


def _gelu_grad(z: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


# name → (forward a = f(z), derivative da/dz given z and a, options)
ACTIVATION_FORWARD = {
    "relu": lambda z, o: torch.clamp(z, min=0),
    "tanh": lambda z, o: torch.tanh(z),
    "sigmoid": lambda z, o: 1 / (1 + torch.exp(-z)),
    "gelu": lambda z, o: (0.5 * z * (1 + torch.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z**3)))
                          if o.get("approximate") == "tanh" else 0.5 * z * (1 + torch.erf(z / math.sqrt(2.0)))),
    "leaky_relu": lambda z, o: torch.where(z > 0, z, o["negative_slope"] * z),
    "identity": lambda z, o: z,
}
ACTIVATION_DERIVATIVES = {
    "relu": lambda z, a, o: (z > 0).to(z.dtype),  # torch's choice at 0: derivative 0
    "tanh": lambda z, a, o: 1 - a**2,
    "sigmoid": lambda z, a, o: a * (1 - a),
    "gelu": lambda z, a, o: _gelu_tanh_grad(z) if o.get("approximate") == "tanh" else _gelu_grad(z),
    "leaky_relu": lambda z, a, o: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, o["negative_slope"])),
    "identity": lambda z, a, o: torch.ones_like(z),
}


def _onehot_smoothed(y: torch.Tensor, classes: int, eps: float, dtype) -> torch.Tensor:
    q = torch.nn.functional.one_hot(y, classes).to(dtype)
    return q * (1 - eps) + eps / classes


def _n(y_hat: torch.Tensor, spec) -> float:
    """The divisor of a mean reduction (1 for sum)."""
    return float(y_hat.numel()) if spec.reduction == "mean" else 1.0


# name → dL/dŷ (ŷ: the network's output, shape (batch, outputs))
LOSS_GRADIENTS = {
    "mse": lambda yh, y, s: 2 * (yh - y) / _n(yh, s),
    "l1": lambda yh, y, s: torch.sign(yh - y) / _n(yh, s),
    "huber": lambda yh, y, s: torch.clamp(yh - y, -s.delta, s.delta) / _n(yh, s),
    "smooth_l1": lambda yh, y, s: (torch.sign(yh - y) if s.beta == 0
                                   else torch.clamp((yh - y) / s.beta, -1, 1)) / _n(yh, s),
    "cross_entropy": lambda yh, y, s: (torch.softmax(yh, dim=1)
                                       - _onehot_smoothed(y, yh.shape[1], s.label_smoothing, yh.dtype))
    / (yh.shape[0] if s.reduction == "mean" else 1.0),
    "bce_with_logits": lambda yh, y, s: (torch.sigmoid(yh) - y) / _n(yh, s),
}


def manual_backward(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    activation, loss) -> dict[str, torch.Tensor]:
    """The gradients of a TwoLayerNet by the chain rule, layer by layer, with no autograd.

    forward:  z1 = x·W1ᵀ + b1,  h = f(z1),  ŷ = h·W2ᵀ + b2
    backward: δ2 = dL/dŷ;  dW2 = δ2ᵀ·h;  db2 = Σ δ2;  δh = δ2·W2;  δ1 = δh ⊙ f'(z1);  dW1 = δ1ᵀ·x;  db1 = Σ δ1
    """
    opts = activation.model_dump()
    with torch.no_grad():
        w1, w2 = weights["layer1.weight"], weights["layer2.weight"]
        z1 = x @ w1.T
        if "layer1.bias" in weights:
            z1 = z1 + weights["layer1.bias"]
        h = ACTIVATION_FORWARD[activation.name](z1, opts)
        y_hat = h @ w2.T
        if "layer2.bias" in weights:
            y_hat = y_hat + weights["layer2.bias"]
        delta2 = LOSS_GRADIENTS[loss.name](y_hat, y, loss)
        grads = {"layer2.weight": delta2.T @ h}
        if "layer2.bias" in weights:
            grads["layer2.bias"] = delta2.sum(dim=0)
        delta_h = delta2 @ w2
        delta1 = delta_h * ACTIVATION_DERIVATIVES[activation.name](z1, h, opts)
        grads["layer1.weight"] = delta1.T @ x
        if "layer1.bias" in weights:
            grads["layer1.bias"] = delta1.sum(dim=0)
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

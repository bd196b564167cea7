"""Gradient measurements. Measuring never changes a gradient (changing them lives elsewhere)."""

from __future__ import annotations

from typing import Iterable

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

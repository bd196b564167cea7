"""The classic worked example: one input, one hidden and one output neuron, no bias, identity activation.

    z1 = w1·x,   ŷ = z2 = w2·z1,   L = ½(y − ŷ)²
    ∂L/∂ŷ  = −(y − ŷ)
    ∂L/∂w2 = ∂L/∂ŷ · ∂ŷ/∂w2          = −(y − ŷ)·z1
    ∂L/∂w1 = ∂L/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1 = −(y − ŷ)·w2·x

The chain rule is done by hand in Python floats; autograd gets the same numbers from torch.
"""

from __future__ import annotations

import math

from backprop_cli.errors import BackpropError


def forward(x: float, y: float, w1: float, w2: float) -> dict:
    z1 = w1 * x
    y_hat = w2 * z1
    r = y - y_hat
    return {"z1": z1, "y_hat": y_hat, "loss": 0.5 * r * r}  # r * r overflows to inf; r ** 2 would raise


def chain_rule(x: float, y: float, w1: float, w2: float) -> dict:
    f = forward(x, y, w1, w2)
    d_yhat = -(y - f["y_hat"])
    return {"dL_dy_hat": d_yhat, "w2": d_yhat * f["z1"], "w1": d_yhat * w2 * x}


def autograd(x: float, y: float, w1: float, w2: float) -> dict:
    import torch

    t1 = torch.tensor(w1, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor(w2, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (y - t2 * (t1 * x)) ** 2
    loss.backward()
    return {"w1": t1.grad.item(), "w2": t2.grad.item()}


def explain(x: float, y: float, w1: float, w2: float, lr: float, steps: int = 1) -> dict:
    """One worked step in full, plus the loss over ``steps`` SGD updates (w ← w − η·∂L/∂w).

    Too large a learning rate makes the updates grow without bound: the history then ends with the
    first update that is not a finite number, and ``diverged_at`` names it (else None).
    """
    bad = [f"--{name} must be a finite number (got {value})"
           for name, value in (("x", x), ("y", y), ("w1", w1), ("w2", w2), ("lr", lr)) if not math.isfinite(value)]
    if bad:
        raise BackpropError("; ".join(bad))
    fwd = forward(x, y, w1, w2)
    grads = chain_rule(x, y, w1, w2)
    auto = autograd(x, y, w1, w2)
    new_w1, new_w2 = w1 - lr * grads["w1"], w2 - lr * grads["w2"]
    history = []
    diverged_at = None
    a, b = w1, w2
    for step in range(1, steps + 1):
        g = chain_rule(x, y, a, b)
        loss = forward(x, y, a, b)["loss"]
        a, b = a - lr * g["w1"], b - lr * g["w2"]
        row = {"step": step, "loss": loss, "grad_w1": g["w1"], "grad_w2": g["w2"], "w1": a, "w2": b,
               "loss_after": forward(x, y, a, b)["loss"]}
        history.append(row)
        if not all(math.isfinite(v) for v in row.values()):
            diverged_at = step
            break
    return {
        "inputs": {"x": x, "y": y, "w1": w1, "w2": w2, "lr": lr},
        "forward": fwd,
        "chain_rule": {"w1": grads["w1"], "w2": grads["w2"]},
        "dL_dy_hat": grads["dL_dy_hat"],
        "autograd": auto,
        "update": {"w1": new_w1, "w2": new_w2, "loss_after": forward(x, y, new_w1, new_w2)["loss"]},
        "history": history,
        "diverged_at": diverged_at,
    }

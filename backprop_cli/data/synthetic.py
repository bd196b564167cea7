"""Seeded synthetic data (random, teacher or class targets), drawn by torch from its own generator."""

from __future__ import annotations

import math

from backprop_cli.config import SyntheticData, task_of
from backprop_cli.data.tables import Table

TEACHER_HIDDEN = 32


def synthetic(spec: SyntheticData, input_size: int, output_size: int, seed: int,
              loss: str = "mse") -> Table:
    """Seeded synthetic data from its own ``torch.Generator`` (independent of the model's init).

    ``random``: ``randn(samples, input_size)`` inputs and ``randn(samples, output_size)`` targets.
    ``teacher``: targets from a fixed random tanh network plus Gaussian noise, so the loss can fall.
    ``classes``: the teacher's (noisy) logits turned into class labels (argmax) for cross_entropy,
    or into 0/1 targets (logit > 0) for bce_with_logits.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    n = spec.samples
    x = torch.randn(n, input_size, generator=g)
    if spec.targets == "random":
        y = torch.randn(n, output_size, generator=g)
    else:
        w1 = torch.randn(input_size, TEACHER_HIDDEN, generator=g) / math.sqrt(input_size)
        w2 = torch.randn(TEACHER_HIDDEN, output_size, generator=g) * (2.0 / math.sqrt(TEACHER_HIDDEN))
        y = torch.tanh(x @ w1) @ w2 + spec.noise * torch.randn(n, output_size, generator=g)
        if spec.targets == "classes":
            y = y.argmax(dim=1) if task_of(loss) == "classes" else (y > 0).float()
    classes = [str(k) for k in range(output_size)] if task_of(loss) == "classes" else None
    return Table(x.numpy(), y.numpy(), f"synthetic ({spec.targets})",
                 [f"x{i}" for i in range(input_size)], [f"y{i}" for i in range(output_size)], classes)


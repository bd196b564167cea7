"""train's per-layer diagnostics: measured on the device, on logging steps only.

For each hidden layer, over the batch, from the activation's output a:

- ``mean`` and ``std`` of a (every unit and row; std without Bessel's correction);
- ReLU family (``unit_check: dead``): ``dead_fraction``, the share of the layer's units whose output
  is 0 for every row of the batch (GELU: |a| ≤ 1e-3, where |f′| < 0.004), so they pass no gradient;
  NaN (not judged, no warning) on a batch of fewer than ``min(DEAD_MIN_ROWS, batch_size)`` rows: of a
  2-row last batch half the units of a healthy ReLU layer are 0 for both rows by chance;
- tanh and sigmoid (``unit_check: saturated``): ``saturated_fraction``, the share of the layer's
  outputs, every unit and row, in a flat tail (tanh |a| > 0.97; sigmoid a < 0.03 or a > 0.97).

For each parameter: ``grad_to_weight`` = ‖grad‖/‖w‖ (the gradient before clipping) and
``update_ratios`` = ‖Δw‖/‖w‖, how far this step's update moved it (w before the update; 0 when the
update was skipped). About 1e-3 is the healthy update ratio of the "makemore" lectures.

The engine asks `Diagnostics.measures_at(step)` at each step. On such a step the forward also returns the hidden
outputs (``Net.forward(x, keep_hidden=True)``: a flag, which DistributedDataParallel and torch.compile
pass through where a hook would be missed), and :meth:`Diagnostics.measure` turns them, the gradient
norms and the weights into one 1-D device tensor that rides on the engine's read-back (no sync of its
own). :meth:`Diagnostics.unpack` turns the numbers read back into the record's plain data.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from backprop_cli.core.components import ACTIVATIONS


DEAD_MIN_ROWS = 16  # dead_fraction is judged on batches of at least min(this, batch_size) rows


class Diagnostics:
    """What to measure on due steps, and how the numbers are laid out in the read-back."""

    def __init__(self, names: list[str], hidden_layers: int, activation: str, due: Callable[[int], bool],
                 min_rows: int = DEAD_MIN_ROWS):
        entry = ACTIVATIONS[activation]
        self.names = list(names)
        self.layers = [f"layer{k}" for k in range(1, hidden_layers + 1)]
        self.check, self.flat = entry.unit_check, entry.flat
        self.stats = ("mean", "std") + ((f"{self.check}_fraction",) if self.check else ())
        self.measures_at = due
        self.min_rows = min_rows  # fewer rows than this: dead_fraction NaN
        self.width = len(self.layers) * len(self.stats) + 2 * len(self.names)

    @classmethod
    def of(cls, model, activation: str, due: Callable[[int], bool],
           batch_size: Optional[int] = None) -> "Diagnostics":
        """For a ``Net`` (inside any DDP or torch.compile wrapper) with this activation; ``batch_size``: the
        run's, so that a run of smaller batches than :data:`DEAD_MIN_ROWS` is still judged on its full ones."""
        from backprop_cli.core.engine import base_model, trainable

        names, _ = trainable(model)
        min_rows = DEAD_MIN_ROWS if batch_size is None else min(DEAD_MIN_ROWS, batch_size)
        return cls(names, len(base_model(model).layers) - 1, activation, due, min_rows)

    def columns(self) -> tuple[tuple[str, ...], ...]:
        """The key paths of the record's diagnostics, in order (the CSV metrics columns)."""
        return (tuple(("activations", layer, k) for layer in self.layers for k in self.stats)
                + tuple(("grad_to_weight", n) for n in self.names) + tuple(("update_ratios", n) for n in self.names))

    def measure(self, hidden: list[torch.Tensor], grad_norms: torch.Tensor, params: list[torch.Tensor],
                before: Optional[list[torch.Tensor]]) -> torch.Tensor:
        """``[per layer: mean, std, (fraction)] + [‖g‖/‖w‖ per parameter] + [‖Δw‖/‖w‖ per parameter]`` on the
        device, in ``grad_norms``' dtype. ``before``: the weights before the update (None: not updated)."""
        parts = []
        for h in hidden:
            h = h.detach().float()
            std, mean = torch.std_mean(h, correction=0)
            parts += [mean.reshape(1), std.reshape(1)]
            if self.check == "dead":
                if h.shape[0] < self.min_rows:
                    parts.append(h.new_full((1,), float("nan")))
                else:
                    parts.append(self.flat(h).all(dim=0).float().mean().reshape(1))
            elif self.check == "saturated":
                parts.append(self.flat(h).float().mean().reshape(1))
        now = [p.detach() for p in params]
        weights = before if before is not None else now
        w_norms = torch.stack(torch._foreach_norm(weights, 2.0)).to(grad_norms.dtype)
        if before is not None:
            moved = torch.stack(torch._foreach_norm(torch._foreach_sub(now, before), 2.0)).to(grad_norms.dtype)
        else:
            moved = torch.zeros_like(w_norms)
        parts += [grad_norms / w_norms, moved / w_norms]
        return torch.cat([p.to(grad_norms.dtype) for p in parts])

    def unpack(self, values: list[float]) -> dict:
        """The numbers of :meth:`measure`, read back, as the record's fields."""
        it = iter(values)
        activations = {layer: {k: next(it) for k in self.stats} for layer in self.layers}
        grad_to_weight = {n: next(it) for n in self.names}
        update_ratios = {n: next(it) for n in self.names}
        return {"activations": activations, "grad_to_weight": grad_to_weight, "update_ratios": update_ratios}

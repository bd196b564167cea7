"""train's warnings: thresholds on the diagnostics of its logging steps, each warned once. No torch.

A warning names the layer or parameter, the step, the numbers, and what to try. The thresholds
(documented in the README, "Diagnostics"):

- a hidden layer with more than half its units dead (ReLU family) or saturated (tanh, sigmoid);
- a layer whose gradient norm is more than 1000× smaller (vanishing) or larger (exploding) than the
  last layer's (a layer's norm: the L2 norm of its weight and bias gradients together; the linear
  layers ``layerK`` only, not the norm layers' γ and β);
- a parameter whose update-to-data ratio ‖Δw‖/‖w‖ stays above 1e-1 or below 1e-5 at every logging step
  over 100 steps or more (skipped steps and steps whose ratio is not finite are left out).
"""

from __future__ import annotations

import math
from typing import Optional
from backprop_cli.core.records import StepRecord

UNITS_BAD = 0.5  # more than this share of a layer's units dead or saturated
GRAD_GAP = 1000.0  # a layer's gradient norm this many times smaller or larger than the last layer's
UPDATE_HIGH, UPDATE_LOW = 1e-1, 1e-5  # update-to-data ratio bounds ...
UPDATE_SPAN = 100  # ... held for this many steps
UPDATE_HEALTHY = 1e-3  # the update-to-data ratio the advice names as healthy (the dashboard's guide line)


def layer_norms(grad_norms: dict[str, float]) -> dict[str, float]:
    """Each layer's gradient norm (``layer3.weight`` and ``layer3.bias`` together), in layer order."""
    squares: dict[str, float] = {}
    for name, value in grad_norms.items():
        layer = name.split(".")[0]
        squares[layer] = squares.get(layer, 0.0) + (value * value if value is not None else math.nan)
    return {layer: math.sqrt(total) for layer, total in squares.items()}


def _g(v: float) -> str:
    return f"{v:.2g}" if v != 0 else "0"


def _names(items: list[str]) -> str:
    return ", ".join(items)


class HealthMonitor:
    """Folds records into warnings; :meth:`record` returns the ones that are new (one per kind and step,
    naming every layer or parameter that newly crossed that threshold)."""

    def __init__(self, activation: str = "", init: str = "default", norm: str = "none",
                 residual: Optional[bool] = None) -> None:
        """``activation``, ``init``, ``norm``: what the run uses (the advice need not suggest it again);
        ``residual``: whether ``model.residual: true`` is advice for this model (False: it has it already,
        None: no hidden layer's input and output widths match, so it cannot apply)."""
        self.activation, self.init, self.norm, self.residual = activation, init, norm, residual
        self.warnings: list[str] = []
        self._warned: set[tuple[str, str]] = set()
        self._out_since: dict[tuple[str, str], int] = {}  # (param, high|low) → first step of the stretch

    def record(self, rec: StepRecord) -> list[str]:
        if rec.activations is None or rec.skipped:
            return []
        new = self._units(rec) + self._gradients(rec) + self._updates(rec)
        self.warnings += new
        return new

    def _try(self, *advice: str) -> str:
        """The advice, less what the run already does (its activation, its init)."""
        done = {f"model.init: {self.init}", f"model.activation: {self.activation}", f"model.norm: {self.norm}"}
        if not self.residual:
            done.add("model.residual: true")
        if self.activation == "relu" and self.init == "kaiming":
            done.add("model.activation: relu with model.init: kaiming")
        kept = [a for a in advice if a not in done]
        if not kept:  # all of it done already: what is left is to look closer
            return "backprop inspect-grads to see each layer's gradients"
        return ", ".join(kept[:-1]) + (", or " if len(kept) > 1 else "") + kept[-1]

    def _new(self, kind: str, names: list[str]) -> list[str]:
        fresh = [n for n in names if (n, kind) not in self._warned]
        self._warned.update((n, kind) for n in fresh)
        return fresh

    def _units(self, rec: StepRecord) -> list[str]:
        out = []
        for kind, key in (("dead", "dead_fraction"), ("saturated", "saturated_fraction")):
            bad = {layer: s[key] for layer, s in rec.activations.items()
                   if s.get(key) is not None and s[key] > UNITS_BAD}
            fresh = self._new(kind, list(bad))
            if not fresh:
                continue
            shares = ", ".join(f"{bad[layer]:.0%}" for layer in fresh)
            if kind == "dead":
                out.append(f"{_names(fresh)}: {shares} of the units dead at step {rec.step} (0 for every row of the "
                           "batch: no gradient passes); try " + self._try("a lower optimizer.lr", "model.init: kaiming",
                                                                          "model.activation: leaky_relu"))
            else:
                out.append(f"{_names(fresh)}: {shares} of the outputs saturated at step {rec.step} (in the flat "
                           "tails, where the gradient vanishes); try " + self._try(
                               "model.init: xavier", "model.norm: batch", "a lower optimizer.lr",
                               "inputs scaled to mean 0 and std 1"))
        return out

    def _gradients(self, rec: StepRecord) -> list[str]:
        norms = {k: v for k, v in layer_norms(rec.grad_norms).items() if k.startswith("layer")}  # the linear chain
        if len(norms) < 2:
            return []
        *hidden, last = norms
        ref = norms[last]
        if not (math.isfinite(ref) and ref > 0):
            return []
        small = [k for k in hidden if math.isfinite(norms[k]) and norms[k] * GRAD_GAP < ref]
        large = [k for k in hidden if math.isfinite(norms[k]) and norms[k] > GRAD_GAP * ref]
        out = []
        fresh = self._new("vanishing", small)
        if fresh:
            out.append(f"{_names(fresh)}: gradient norm {', '.join(_g(norms[k]) for k in fresh)}, over "
                       f"{GRAD_GAP:,.0f}× smaller than {last}'s ({_g(ref)}) at step {rec.step}: vanishing gradients; "
                       "try " + self._try("model.activation: relu with model.init: kaiming", "model.norm: batch",
                                          "model.residual: true",
                                          *(["fewer layers"] if len(norms) > 2 else [])))  # not for 2 layers
        fresh = self._new("exploding", large)
        if fresh:
            out.append(f"{_names(fresh)}: gradient norm {', '.join(_g(norms[k]) for k in fresh)}, over "
                       f"{GRAD_GAP:,.0f}× larger than {last}'s ({_g(ref)}) at step {rec.step}: exploding gradients; "
                       "try " + self._try("train.clip_grad_norm", "a lower optimizer.lr", "model.init: xavier"))
        return out

    def _updates(self, rec: StepRecord) -> list[str]:
        held: dict[str, list[str]] = {"high": [], "low": []}
        ratios = {n: r for n, r in (rec.update_ratios or {}).items() if r is not None and math.isfinite(r)}
        for name, ratio in ratios.items():
            for side, outside in (("high", ratio > UPDATE_HIGH), ("low", ratio < UPDATE_LOW)):
                key = (name, side)
                if not outside:
                    self._out_since.pop(key, None)
                elif rec.step - self._out_since.setdefault(key, rec.step) + 1 >= UPDATE_SPAN:
                    held[side].append(name)
        out = []
        for side, names in held.items():
            fresh = self._new(side, names)
            if not fresh:
                continue
            since = min(self._out_since[(n, side)] for n in fresh)
            now = ", ".join(_g(ratios[n]) for n in fresh)
            if side == "high":
                out.append(f"{_names(fresh)}: update-to-data ratio above {UPDATE_HIGH:g} since step {since} (now "
                           f"{now} at step {rec.step}): each step rewrites the weights; lower optimizer.lr "
                           f"(an update-to-data ratio of about {UPDATE_HEALTHY:g} is healthy; backprop find-lr "
                           "suggests an lr)")
            else:
                out.append(f"{_names(fresh)}: update-to-data ratio below {UPDATE_LOW:g} since step {since} (now "
                           f"{now} at step {rec.step}): the weights barely move; raise optimizer.lr "
                           f"(an update-to-data ratio of about {UPDATE_HEALTHY:g} is healthy; backprop find-lr "
                           "suggests an lr)")
        return out

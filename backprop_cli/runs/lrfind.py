"""find-lr: the learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's ``lr_find``,
Lightning's ``Tuner.lr_find``).

From the configured initial weights, train while the learning rate grows exponentially from ``start``
to ``end`` over ``steps`` steps (a ``LambdaLR`` schedule in train's own engine: the same loop, batches,
clipping and precision as ``train``), and stop once the smoothed loss passes 4× its minimum or goes
non-finite. The loss is smoothed as fastai does (an exponential moving average, β = 0.98, debiased).
Three rules; the first is the suggestion:

- ``suggested_lr``: fastai's ``valley`` rule (its default since fastai 2.5): the longest strictly
  falling run of the smoothed loss (the longest decreasing subsequence, ending at its first possible
  point), and the point half-way between its first and second third. It lies inside the region where the
  loss falls, and a noisy batch that makes one steep local slope (which the steepest-descent rule picks,
  often far too early: 1.6e-6 on a real regression table where the loss falls between 1e-2 and 1e-1) does
  not move it. No suggestion when the smoothed loss never falls below its start by :data:`CLEAR_DROP`;
- ``steepest_lr``: the lr where the smoothed loss falls fastest (the most negative slope against
  log lr, central differences as ``numpy.gradient``), skipping the first tenth of the sweep (at most 10
  steps, where the average is still warming up) as Lightning does;
- ``lr_min``: the lr at the smoothed loss's minimum, divided by 10 (fastai's name and rule).

Nothing is written: the config, checkpoints and the weights on disk are untouched. :func:`suggest` is
plain Python (no torch).
"""

from __future__ import annotations

import math
from typing import Optional

BETA = 0.98  # smoothing of the loss (exponential moving average, debiased)
STOP_FACTOR = 4.0  # stop once the smoothed loss exceeds this many times its minimum
SKIP_BEGIN = 10  # at most this many first points are left out of the steepest-slope search
CLEAR_DROP = 0.1  # a smoothed loss that never falls 10% below its start gives weak suggestions


def lr_at(i: int, steps: int, start: float, end: float) -> float:
    """The learning rate of step ``i`` (from 0) of the sweep: ``start·(end/start)^(i/(steps−1))``."""
    return start * (end / start) ** (min(i, steps - 1) / max(1, steps - 1))


def too_close(start: float, end: float, steps: int) -> bool:
    """Whether two consecutive learning rates of the sweep are the same number (in float64 or in the
    log10 that the slopes are taken against): a range too narrow for its steps (0.1 to
    0.1000000000000001, or 5e-324 to 1e-323 in 100 steps) has no slope to find."""
    xs = [math.log10(lr_at(i, steps, start, end)) for i in range(steps)]
    return any(b <= a for a, b in zip(xs, xs[1:]))


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The debiased exponential moving average of the losses (fastai's smoothing)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def gradient(values: list[float], xs: list[float]) -> list[float]:
    """d values / d xs by central differences inside, one-sided at the ends (as ``numpy.gradient``)."""
    n = len(values)
    if n < 2:
        return [math.nan] * n
    def div(a: float, b: float) -> float:  # no slope where two xs are the same number
        return a / b if b != 0 else math.nan

    out = [div(values[1] - values[0], xs[1] - xs[0])]
    for i in range(1, n - 1):
        h0, h1 = xs[i] - xs[i - 1], xs[i + 1] - xs[i]
        out.append(div(h0 ** 2 * values[i + 1] - h1 ** 2 * values[i - 1] + (h1 ** 2 - h0 ** 2) * values[i],
                       h0 * h1 * (h0 + h1)))
    out.append(div(values[-1] - values[-2], xs[-1] - xs[-2]))
    return out


def valley_index(values: list[float]) -> Optional[int]:
    """fastai's ``valley``: with ``lds[i]`` the length of the longest strictly decreasing subsequence
    ending at ``i``, ``end`` the first index of the longest one and ``start = end − lds[end]``, the index
    ``start + ⌊(end − start)/3⌋ + ⌊(end − start)/6⌋``. O(n log n) (patience sorting) instead of fastai's
    O(n²) double loop, with the same result. None for fewer than 2 points or no fall at all."""
    import bisect

    tails: list[float] = []  # tails[m]: the largest last value of a decreasing run of length m + 1, negated
    lds = []
    for v in values:
        k = bisect.bisect_left(tails, -v)
        if k == len(tails):
            tails.append(-v)
        else:
            tails[k] = -v
        lds.append(k + 1)
    if len(values) < 2 or max(lds) < 2:
        return None
    end = lds.index(max(lds))
    start = end - lds[end]
    sections = (end - start) / 3
    return start + int(sections) + int(sections / 2)


def suggest(lrs: list[float], losses: list[float]) -> dict:
    """The suggestions from a sweep's learning rates and (raw) losses: ``{"suggested_lr", "steepest_lr",
    "lr_min", "smoothed_losses", "drop", "falls"}``; a suggestion is None where the curve gives none
    (too few points, no descent). ``drop``: how far the smoothed loss fell below its start, as a fraction
    of it; ``falls``: it fell by at least :data:`CLEAR_DROP` (else the curve is noise: no suggested_lr)."""
    smoothed = smooth(losses)
    if not smoothed:
        return {"suggested_lr": None, "steepest_lr": None, "lr_min": None, "smoothed_losses": [],
                "drop": 0.0, "falls": False}
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    steepest_lr: Optional[float] = None
    skip = min(SKIP_BEGIN, len(smoothed) // 10)
    if len(smoothed) - skip >= 3:
        slopes = gradient(smoothed, [math.log10(lr) for lr in lrs])
        candidates = [i for i in range(skip, len(slopes)) if math.isfinite(slopes[i])]
        steepest = min(candidates, key=slopes.__getitem__) if candidates else None
        if steepest is not None and slopes[steepest] < 0:
            steepest_lr = lrs[steepest]
    drop = 1 - smoothed[best] / smoothed[0] if smoothed[0] > 0 else 0.0
    falls = drop >= CLEAR_DROP
    valley = valley_index(smoothed) if falls and len(smoothed) >= 3 else None
    # never outside the descending region: not past the smoothed loss's minimum
    suggested = lrs[min(max(valley, 0), best)] if valley is not None else None
    return {"suggested_lr": suggested, "steepest_lr": steepest_lr, "lr_min": lrs[best] / 10 if falls else None,
            "smoothed_losses": smoothed, "drop": drop, "falls": falls}


def find_lr(cfg, *, start: float, end: float, steps: int, table=None) -> dict:
    """The sweep on the config's run (see the module's doc): ``{"lrs", "losses", "smoothed_losses",
    "suggested_lr", "lr_min", "stopped_early", "steps", "stop_reason"}``."""
    import torch

    from backprop_cli.core.build import build_run
    from backprop_cli.core.engine import NonFiniteError, run_steps

    run = build_run(cfg, dataset=table)
    group = run.optimizer.param_groups[0]
    base = group.get("initial_lr", group["lr"])  # what a LambdaLR multiplies (the config's own lr)
    loop = run.loop()  # the config's schedule is replaced by the sweep
    loop.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda i: lr_at(i, steps, start, end) / base)
    lrs: list[float] = []
    losses: list[float] = []
    reason: Optional[str] = None
    average, lowest = 0.0, math.inf
    try:
        for rec in run_steps(loop, steps, guard=run.guard, read_every=1):
            if rec.skipped or not math.isfinite(rec.loss):
                reason = f"the loss went non-finite at step {rec.step} (lr {rec.lr:.3g})"
                break
            lrs.append(rec.lr)
            losses.append(rec.loss)
            average = BETA * average + (1 - BETA) * rec.loss  # as smooth(), one step at a time
            smoothed = average / (1 - BETA ** len(losses))
            lowest = min(lowest, smoothed)
            if smoothed > STOP_FACTOR * lowest:
                reason = f"the smoothed loss passed {STOP_FACTOR:g}× its minimum at step {rec.step} (lr {rec.lr:.3g})"
                break
    except NonFiniteError as e:
        reason = f"a non-finite value at step {e.step} (lr {lr_at(e.step - 1, steps, start, end):.3g})"
    result = {"lrs": lrs, "losses": losses, "stopped_early": reason is not None, "stop_reason": reason,
              "steps": steps, "start": start, "end": end, "clear_drop": CLEAR_DROP}
    result.update(suggest(lrs, losses))
    return result

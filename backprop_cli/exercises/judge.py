"""The checking of an exercise: its inputs, autograd's reference, the verdict per gradient, the hints.

The inputs are drawn here (float64, seeded, three sizes per exercise: see catalog.py); the reference
gradients come from autograd on the exercise's own forward (never the learner's copy of it), computed
before the learner's code runs. runs/exercise_worker.py calls these in the process that runs the
learner's file. Nothing here prints.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from backprop_cli.exercises.catalog import Exercise

CASE_SEED = 2718  # the inputs of case i come from torch.Generator().manual_seed(CASE_SEED + i)
RTOL = 1e-8  # approximate: max |got − want| ≤ RTOL · max |want| + ATOL (float64 round-off is ~1e-16)
ATOL = 1e-12

# --------------------------------------------------------------------------- inputs and reference


def _dims(e: Exercise, name: str, case: dict) -> list[int]:
    s = e.shapes[name]
    return [case[k.strip()] for k in s.split(",")] if s else []


def make_inputs(e: Exercise, case: dict, seed: int) -> list[torch.Tensor]:
    """The forward's arguments of one case (and ``dout`` last when the exercise has one), in order."""
    gen = torch.Generator().manual_seed(seed)
    values = {}
    for name in e.forward_args:
        kind = e.kinds.get(name, "normal")
        shape = _dims(e, name, case)
        if kind.startswith("labels:"):
            values[name] = torch.randint(0, case[kind.split(":")[1]], shape, generator=gen)
            continue
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        if kind == "away_from_zero":  # no input near ReLU's kink
            t = t + 0.1 * torch.sign(t)
        elif kind == "scale":  # γ near 1 but no element equal to 1
            t = 1 + 0.5 * t
        elif kind.startswith("weights:"):
            t = t / math.sqrt(case[kind.split(":")[1]])
        values[name] = t
    if e.has_dout:
        out = forward_of(e)(*[values[a] for a in e.forward_args])
        values["dout"] = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return [values[a] for a in e.args]


def _function(source: str, name: str):
    namespace = {"torch": torch}
    exec(compile(source, f"<exercise {name}>", "exec"), namespace)  # noqa: S102 - our own table's text
    return namespace[name]


def forward_of(e: Exercise):
    return _function(e.forward, "forward")


def solution_of(e: Exercise):
    return _function(e.solution, "backward")


def reference(e: Exercise, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """autograd's gradients of the exercise's forward, with respect to ``e.wrt``, for these inputs."""
    named = dict(zip(e.args, inputs))
    leaves = {n: t.clone().requires_grad_(n in e.wrt) for n, t in named.items() if n != "dout"}
    out = forward_of(e)(*[leaves[a] for a in e.forward_args])
    if e.has_dout:
        out.backward(named["dout"])
    else:
        out.backward()
    return [leaves[w].grad.detach() for w in e.wrt]


def cases_of(e: Exercise) -> list[list[torch.Tensor]]:
    return [make_inputs(e, case, CASE_SEED + i) for i, case in enumerate(e.cases)]


# --------------------------------------------------------------------------- judging


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return a.shape == b.shape and bool(((a - b).abs() <= RTOL * scale + ATOL).all())


def hint(e: Exercise, k: int, got: Optional[torch.Tensor], want: torch.Tensor, case: dict) -> str:
    """Why gradient ``k`` is wrong, when the reason can be recognised: None, transposed, a constant factor
    (a sign, a missing 1/N or ½), a reshape; else the exercise's own hint for it."""
    name, of = e.grads[k], e.wrt[k]
    own = e.hints[name]
    want_shape = list(want.shape)
    if got is None:
        return f"{name} is None: backward does not compute it yet. {own}"
    if list(got.shape) != want_shape:
        if got.dim() == 2 and list(got.shape) == want_shape[::-1]:
            right = " (and its transpose is right)" if _close(got.T, want) else ""
            return f"{name} is transposed: it has shape {list(got.shape)}, {of}'s shape is {want_shape}{right}. {own}"
        if got.numel() == want.numel() and _close(got.reshape(want.shape), want):
            return f"{name} has the right numbers in the wrong shape {list(got.shape)}: {of}'s shape is {want_shape}"
        return f"{name} has shape {list(got.shape)}, {of}'s shape is {want_shape}. {own}"
    if want.dim() == 2 and want.shape[0] == want.shape[1] and _close(got, want.T):
        return f"{name} is transposed (the shape is square here, so only the numbers show it). {own}"
    denom = float((want * want).sum())
    if denom > 0:
        c = float((got * want).sum()) / denom
        if c != 0 and _close(got, c * want):
            rows = case.get(e.rows, 1)
            n = math.prod(case[k.strip()] for k in e.mean_over.split(",")) if e.mean_over else rows
            factors = [(-1.0, "the sign is wrong: your answer is −1 times the right one"),
                       (float(n), f"{n} times too large: a missing 1/{'n' if n != rows else 'N'} (the loss is a mean over "
                                  f"{'every element' if n != rows else 'the N rows'}, so each term carries 1/{n})"),
                       (float(rows), f"{rows} times too large: a missing 1/N (the mean over the N = {rows} rows)"),
                       (1.0 / n, f"{n} times too small: divided by {n} once too often"),
                       (2.0, "twice the right answer: a missing ½ (or a factor 2 too many)"),
                       (0.5, "half the right answer: a missing factor 2 (d(u²)/du = 2u)")]
            for value, text in factors:
                if abs(c - value) <= 1e-6 * abs(value):
                    return f"{name}: {text}. {own}"
            return f"{name} is {c:.4g} times the right answer: a constant factor is off. {own}"
    return f"{name}: {own}"


def judge(e: Exercise, refs: list[list[torch.Tensor]], got: list[list]) -> dict:
    """Per gradient over the three cases (``refs``: autograd's, ``got``: the learner's): exact (bit for
    bit), approximate (round-off) or wrong; its shape; the largest difference; and a hint for the first
    wrong gradient. Plain data."""
    lines = []
    first_hint = None
    for k, name in enumerate(e.grads):
        status, diff, shape_ok, bad_case = "exact", 0.0, True, None
        for i, (ref, out) in enumerate(zip(refs, got)):
            want, mine = ref[k], out[k]
            if mine is None or list(mine.shape) != list(want.shape):
                shape_ok = shape_ok and mine is not None and list(mine.shape) == list(want.shape)
                status, diff = "wrong", math.inf if mine is None else diff
                bad_case = i if bad_case is None else bad_case
                continue
            d = float((mine - want).abs().max()) if want.numel() else 0.0
            d = d if math.isfinite(d) else math.inf
            diff = max(diff, d)
            if not _close(mine, want):
                status = "wrong"
                bad_case = i if bad_case is None else bad_case
            elif d > 0 and status == "exact":
                status = "approximate"
        got_shape = None
        if bad_case is not None and got[bad_case][k] is not None:
            got_shape = list(got[bad_case][k].shape)
        show = bad_case if bad_case is not None else 0
        line = {"name": name, "of": e.wrt[k], "status": status, "max_abs_diff": None if diff == math.inf else diff,
                "shape_ok": shape_ok, "shape": e.shapes[e.wrt[k]], "want_shape": list(refs[show][k].shape),
                "got_shape": got_shape if not shape_ok else list(refs[show][k].shape),
                "case": None if bad_case is None else case_text(e, bad_case)}
        lines.append(line)
        if status == "wrong" and first_hint is None:
            first_hint = {"grad": name, "case": case_text(e, bad_case),
                          "text": hint(e, k, got[bad_case][k], refs[bad_case][k], e.cases[bad_case])}
    return {"grads": lines, "hint": first_hint, "pass": all(line["status"] != "wrong" for line in lines)}


def case_text(e: Exercise, i: int) -> str:
    return ", ".join(f"{k}={v}" for k, v in e.cases[i].items())

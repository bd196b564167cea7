"""explain --config: the configured net's chain rule, layer by layer from the loss back. No torch here."""

from __future__ import annotations

import math

from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks

SHOWN = 6  # numbers of a vector shown before "…"

# dL/dŷ of each loss (reduction mean; the divisor is written out)
LOSS_GRADIENT = {
    "mse": "2(ŷ − y)/{n}",
    "l1": "sign(ŷ − y)/{n}",
    "huber": "clamp(ŷ − y, ±δ)/{n}",
    "smooth_l1": "clamp((ŷ − y)/β, ±1)/{n}",
    "cross_entropy": "(softmax(ŷ) − onehot(y))/{b}",
    "bce_with_logits": "(σ(ŷ) − y)/{n}",
}


def numbers(values, limit: int = SHOWN) -> str:
    """``[a, b, c]`` (whole when short), else the first ``limit`` and ``… (N values)``."""
    flat = list(_flatten(values))
    head = ", ".join(fmt(v) for v in flat[:limit])
    return f"[{head}]" if len(flat) <= limit else f"[{head}, …] ({len(flat)} values)"


def _flatten(values):
    if isinstance(values, (list, tuple)):
        for v in values:
            yield from _flatten(v)
    else:
        yield values


def _shape(s) -> str:
    return "[" + ", ".join(str(n) for n in s) + "]" if s is not None else "-"


def _norm(values) -> float:
    return math.sqrt(sum(v * v for v in _flatten(values)))


def _row(values, i):
    """Row ``i`` of a batch-sized array, as numbers."""
    return f"row {i}: {numbers(values[i])}"


def _intro(r: dict, act: str, depth: int, grad_text: str) -> Text:
    widths = " → ".join(str(w) for w in r["widths"])
    i = r["sample"]
    head = (f"the configured net ({widths}, {act}, {r['loss_label']}) at its seeded init, on batch {r['batch']} "
            f"({r['rows']} rows); the numbers are row {i} of each batch-sized array; float64.\n")
    if r["plain"]:
        return Text(head +
                    f"forward:  z_k = h_(k−1)·W_kᵀ + b_k,  h_k = {act}(z_k),  h_0 = x,  ŷ = z_{depth} (no activation "
                    f"after the last layer);  loss L = {fmt(r['loss'])}\n"
                    f"backward: δ_{depth} = dL/dŷ;  dW_k = δ_kᵀ·h_(k−1);  db_k = Σ_rows δ_k;  "
                    f"δ_(k−1) = (δ_k·W_k) ⊙ {act}′(z_(k−1))")
    layers = r["layers"][1:]
    norm = next((e["norm"] for e in layers if e["norm"]), None)
    drop = any(e["dropout"] for e in layers)
    skip = any(e["residual"] for e in layers)
    u = "u_k" if norm else "z_k"
    steps = ["z_k = h_(k−1)·W_kᵀ + b_k"]
    if norm:
        steps.append("u_k = γ_k·x̂_k + β_k, x̂_k = (z_k − μ)/√(σ² + ε)" +
                     (" (μ, σ²: each unit's mean and biased variance over the batch's rows)" if norm["kind"] == "batch"
                      else " (μ, σ²: each row's mean and biased variance over its units)"))
    steps.append(f"a_k = {act}({u})")
    if drop:
        steps.append("d_k = a_k ⊙ m_k/(1 − p) (m_k: a fixed keep-mask from the seed and the batch index)")
    steps.append("h_k = h_(k−1) + (the block's output) where the widths match (the skip)" if skip else
                 "h_k = the block's output")
    back = ["δh_k = δ_(k+1)·W_(k+1)" + (" (+ δh_(k+1) through the skip)" if skip else "")]
    if drop:
        back.append("δa_k = δh_k ⊙ m_k/(1 − p)")
    if norm:
        back += [f"δu_k = δa_k ⊙ {act}′(u_k)", "δ_k = (1/n)·(σ² + ε)^(−½)·(n·δx̂ − Σ δx̂ − x̂·Σ δx̂·x̂), δx̂ = δu_k·γ_k",
                 "dγ_k = Σ_rows δu_k ⊙ x̂_k", "dβ_k = Σ_rows δu_k"]
    else:
        back.append(f"δ_k = δa_k ⊙ {act}′(z_k)")
    mode = ("training mode, as the next step of train: " +
            ("batch norm normalizes with this batch's statistics" if norm and norm["kind"] == "batch" else "") +
            ("; " if norm and norm["kind"] == "batch" and drop else "") +
            ("dropout keeps the mask the blocks show (check-grads' and inspect-grads' mask)" if drop else "")
            if (drop or (norm and norm["kind"] == "batch")) else "")
    return Text(head +
                "forward, each hidden block:  " + ";  ".join(steps) +
                f";  h_0 = x,  ŷ = z_{depth} (no activation after the last layer);  loss L = {fmt(r['loss'])}\n"
                f"backward: δ_{depth} = dL/dŷ = {grad_text};  dW_k = δ_kᵀ·h_(k−1);  db_k = Σ_rows δ_k;  " +
                ";  ".join(back) + (f"\n{mode}" if mode else ""))


def _hidden_rows(t: FitTable, r: dict, e: dict, above: dict, act: str) -> None:
    """A hidden block's forward and backward, through its norm, dropout and skip."""
    k, s, i = e["index"], e["shape"], r["sample"]
    prev = "x" if k == 1 else f"h{k - 1}"
    bias = f" + b{k}" if s["bias"] is not None else ""
    t.add_row(f"z{k}", f"{prev}·W{k}ᵀ{bias}", f"{_shape(s['h_prev'])}·{_shape(s['weight'][::-1])}", _row(e["z"], i))
    n, dr = e["norm"], e["dropout"]
    out_name = lambda last: f"h{k}" if last else None  # noqa: E731
    if n is not None:
        where = "over the rows, per unit" if n["kind"] == "batch" else "over the units, per row"
        mean = numbers(n["mean"]) if n["kind"] == "batch" else f"row {i}: {fmt(n['mean'][i])}"
        var = numbers(n["var"]) if n["kind"] == "batch" else f"row {i}: {fmt(n['var'][i])}"
        wide_ = [len(n["mean"])]
        t.add_row(f"μ{k}", f"mean of z{k} {where}", _shape(wide_), mean)
        t.add_row(f"σ²{k}", f"biased variance of z{k} {where}", _shape(wide_), var)
        t.add_row(f"u{k}", f"γ{k}·(z{k} − μ{k})/√(σ²{k} + ε) + β{k}", _shape(s["z"]), _row(n["u"], i))
    last = dr is None and not e["residual"]
    u = f"u{k}" if n is not None else f"z{k}"
    t.add_row(out_name(last) or f"a{k}", f"{act}({u})", _shape(s["z"]), _row(e["a"], i))
    if dr is not None:
        t.add_row(f"m{k}", f"keep-mask (fixed), p = {fmt(dr['p'])}", _shape(s["z"]), _row(dr["keep"], i))
        t.add_row(out_name(not e["residual"]) or f"d{k}", f"a{k} ⊙ m{k}/(1 − p)", _shape(s["z"]), _row(dr["d"], i))
    if e["residual"]:
        t.add_row(f"h{k}", f"{prev} + {'d' if dr is not None else 'a'}{k} (skip)", _shape(s["h"]), _row(e["h"], i))
    # backward
    j = above["index"]
    from_above = f"δ{j}·W{j}" + (f" + δh{j} (skip)" if above.get("residual") else "")
    t.add_row(f"δh{k}", from_above, _shape(s["h"]), _row(e["delta_h"], i))
    grad_in = f"δh{k}"
    if dr is not None:
        t.add_row(f"δa{k}", f"δh{k} ⊙ m{k}/(1 − p)", _shape(s["z"]), _row(e["delta_a"], i))
        grad_in = f"δa{k}"
    if n is not None:
        over = "rows" if n["kind"] == "batch" else "units"
        t.add_row(f"δu{k}", f"{grad_in} ⊙ {act}′(u{k})", _shape(s["z"]), _row(n["delta_u"], i))
        t.add_row(f"δ{k}", f"(n·δx̂ − Σ_{over} δx̂ − x̂·Σ_{over} δx̂·x̂)/(n·√(σ²{k} + ε)), δx̂ = δu{k}·γ{k}",
                  _shape(s["delta"]), _row(e["delta"], i))
    else:
        t.add_row(f"δ{k}", f"{grad_in} ⊙ {act}′(z{k})", _shape(s["delta"]), _row(e["delta"], i))
    t.add_row("  autograd", f"z{k}.grad", _shape(s["delta"]), _row(e["autograd_delta"], i))
    if n is not None:
        width = [len(n["weight"])]
        t.add_row(f"dγ{k}", f"Σ_rows δu{k} ⊙ x̂{k}", _shape(width), numbers(n["grad_weight"]))
        t.add_row("  autograd", f"norm{k}.weight.grad", _shape(width), numbers(n["autograd_weight"]))
        t.add_row(f"dβ{k}", f"Σ_rows δu{k}", _shape(width), numbers(n["grad_bias"]))
        t.add_row("  autograd", f"norm{k}.bias.grad", _shape(width), numbers(n["autograd_bias"]))


def _parameter_rows(t: FitTable, e: dict) -> None:
    k, s = e["index"], e["shape"]
    prev = "x" if k == 1 else f"h{k - 1}"
    t.add_row(f"dW{k}", f"δ{k}ᵀ·{prev}", _shape(s["weight"]), "first row: " + numbers(e["grad_weight"][0]))
    t.add_row("  autograd", f"layer{k}.weight.grad", _shape(s["weight"]), "first row: " + numbers(e["autograd_weight"][0]))
    if s["bias"] is not None:
        t.add_row(f"db{k}", f"Σ_rows δ{k}", _shape(s["bias"]), numbers(e["grad_bias"]))
        t.add_row("  autograd", f"layer{k}.bias.grad", _shape(s["bias"]), numbers(e["autograd_bias"]))


def render_explain_net(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    layers = r["layers"]  # output layer first
    depth = len(layers)
    i = r["sample"]
    act = r["activation"]
    n = r["rows"] * (len(r["y_hat"][0]) if r["y_hat"] and isinstance(r["y_hat"][0], list) else 1)
    grad_text = LOSS_GRADIENT.get(r["loss_name"], "dL/dŷ").format(n=n if r["reduction"] == "mean" else 1,
                                                                    b=r["rows"] if r["reduction"] == "mean" else 1)
    blocks = [_intro(r, act, depth, grad_text)]
    for pos, e in enumerate(layers):
        k = e["index"]
        s = e["shape"]
        prev = "x" if k == 1 else f"h{k - 1}"
        out = k == depth
        t = FitTable(f"layer{k}" + (" (output layer)" if out else ""),
                     [Col("quantity", align="left"), Col("formula", align="left", drop=1), Col("shape", align="left"),
                      Col("numbers", align="left")], plain=plain, wide=wide)
        if out or r["plain"]:
            bias = f" + b{k}" if s["bias"] is not None else ""
            t.add_row(f"z{k}", f"{prev}·W{k}ᵀ{bias}", f"{_shape(s['h_prev'])}·{_shape(s['weight'][::-1])}",
                      _row(e["z"], i))
            t.add_row("ŷ" if out else f"h{k}", f"z{k} (no activation)" if out else f"{act}(z{k})", _shape(s["h"]),
                      _row(e["h"], i))
            if out:
                t.add_row("dL/dŷ", grad_text, _shape(s["delta"]), _row(r["dL_dy_hat"], i))
            t.add_row(f"δ{k}", "dL/dŷ" if out else f"(δ{k + 1}·W{k + 1}) ⊙ {act}′(z{k})", _shape(s["delta"]),
                      _row(e["delta"], i))
            t.add_row("  autograd", "ŷ.grad" if out else f"z{k}.grad", _shape(s["delta"]), _row(e["autograd_delta"], i))
        else:
            _hidden_rows(t, r, e, layers[pos - 1], act)
        _parameter_rows(t, e)
        blocks.append(t)
        if k == 1:
            passes = ""
        elif r["plain"]:
            passes = f";  passes δ{k - 1} = (δ{k}·W{k}) ⊙ {act}′(z{k - 1}) down to layer{k - 1}"
        else:
            skip = " + δh" + str(k) + " (the skip)" if e.get("residual") else ""
            passes = f";  passes δh{k - 1} = δ{k}·W{k}{skip} down to layer{k - 1}"
        blocks.append(Text(f"layer{k}: max |hand − autograd| = {fmt(e['max_abs_diff'])}" + passes))
    summary = FitTable("summary: every layer's weight gradient, by hand and by autograd",
                       [Col("layer", align="left"), Col("‖dW‖ (hand)"), Col("‖grad‖ (autograd)"),
                        Col("max_abs_diff")], plain=plain, wide=wide)
    for e in layers:
        summary.add_row(e["name"], fmt(_norm(e["grad_weight"])), fmt(_norm(e["autograd_weight"])),
                        fmt(e["max_abs_diff"]))
        if e.get("norm"):
            nm = e["norm"]
            summary.add_row(nm["name"], fmt(_norm(nm["grad_weight"])), fmt(_norm(nm["autograd_weight"])),
                            fmt(nm["max_abs_diff"]))
    worst = max(e["max_abs_diff"] for e in layers)
    blocks += [summary, Text(f"largest difference {fmt(worst)}: float64 round-off; the chain rule above is what "
                             "loss.backward() computes")]
    print_blocks(console, blocks)

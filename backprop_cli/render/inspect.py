"""inspect-grads' and check-grads' tables. No torch.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks

INSPECT_COLUMNS = [Col("parameter", align="left"), Col("shape", align="left", drop=7), Col("norm"),
                   Col("mean", drop=5), Col("std", drop=6), Col("min", drop=3), Col("max", drop=4), Col("abs_max"),
                   Col("zero_fraction", short="zeros", drop=1), Col("grad_to_weight", short="g/w", drop=2)]

def render_inspect(console: Console, plain: bool, result: dict, wide: bool = False) -> None:
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples); "
                "gradients as optimizer.step() would use them")
    t = FitTable("gradients", INSPECT_COLUMNS, plain=plain, wide=wide, label=0)
    for name, s in result["params"].items():
        shape = "×".join(str(d) for d in s["shape"]) or "scalar"
        if s["norm"] is None:
            t.add_row(name, shape, "None", *([""] * 7))
            continue
        t.add_row(name, shape, fmt(s["norm"]), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]),
                  fmt(s["abs_max"]), fmt(s["zero_fraction"]), fmt(s["grad_to_weight"]))
    legend = Text("norm: ‖g‖₂   abs_max: max |g|   zero_fraction: share of exact zeros   "
                  "grad_to_weight: ‖g‖/‖w‖", style="" if plain else "dim")
    blocks: list = [head, t, legend]
    if result["warnings"]:
        blocks.append(Text("\n".join(f"! {w}" for w in result["warnings"]), style="" if plain else "bold yellow"))
    clip = result.get("clip")
    if clip is not None:
        ct = FitTable(f"clip_grad_norm_(max_norm={fmt(clip['max_norm'])}): "
                      f"{'clipped' if clip['clipped'] else 'not clipped (total norm is within max_norm)'}",
                      [Col("parameter", align="left"), Col("norm before", short="before"),
                       Col("norm after", short="after")], plain=plain, wide=wide, label=0)
        for name, s in result["params"].items():
            if s["norm"] is not None:
                ct.add_row(name, fmt(s["norm"]), fmt(clip["norms"][name]))
        ct.add_row("total", fmt(clip["total_norm_before"]), fmt(clip["total_norm_after"]))
        blocks.append(ct)
    for name, text in result["text"].items():
        block = Text(f"{name}.grad\n", style="" if plain else "bold cyan")
        if clip is not None:
            block.append("before clipping:\n" + text + "\nafter clipping:\n" + clip["text"][name], style="")
        else:
            block.append(text, style="")
        blocks.append(block)
    blocks.append(Text("(train --no-zero-grad skips zero_grad, so these would add onto the previous step's)",
                       style="" if plain else "dim"))
    print_blocks(console, blocks)

CHECK_COLUMNS = [Col("parameter", align="left"), Col("elements", short="n", drop=3),
                 Col("chain_rule.max_abs", short="chain.abs"), Col("chain_rule.max_rel", short="chain.rel", drop=2),
                 Col("finite_diff.max_abs", short="fd.abs"), Col("finite_diff.max_rel", short="fd.rel", drop=2),
                 Col("finite_diff.checked", short="fd.checked", drop=1), Col("pass", align="left")]

CHECK_LEGEND = "n = elements, chain = chain_rule, fd = finite_diff, abs = max_abs, rel = max_rel"

def render_check(console: Console, plain: bool, result: dict, wide: bool = False) -> None:
    tol = result["tolerance"]
    t = FitTable("autograd vs the hand-written chain rule vs float64 central differences", CHECK_COLUMNS,
                 plain=plain, wide=wide, label=0, legend=CHECK_LEGEND)
    for name, p in result["params"].items():
        ok = Text("PASS" if p["pass"] else "FAIL", style="" if plain else "green" if p["pass"] else "bold red")
        t.add_row(name, str(p["elements"]), fmt(p["chain_rule"]["max_abs"]), fmt(p["chain_rule"]["max_rel"]),
                  fmt(p["finite_diff"]["max_abs"]), fmt(p["finite_diff"]["max_rel"]),
                  str(p["finite_diff"]["checked"]), ok)
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples)")
    foot = Text(f"tolerance ({tol['dtype']}): |autograd − other| ≤ {fmt(tol['atol_fraction_of_max'])}·max|g| + "
                f"{fmt(tol['rtol'])}·|g| per element; finite-difference step {fmt(tol['finite_diff_step'])}\n"
                + ("all gradients agree: PASS" if result["pass"] else
                   "some gradients disagree or cannot be checked (below): FAIL" if result.get("problems")
                   else "some gradients disagree: FAIL"))
    blocks = [head, t, foot]
    if result.get("problems"):
        blocks.append(Text("\n".join(f"! {p}" for p in result["problems"]), style="" if plain else "bold yellow"))
    print_blocks(console, blocks)

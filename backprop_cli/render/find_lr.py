"""find-lr's suggestions and curve. No torch.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from backprop_cli.render.compare import sparkline
from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks


def render_find_lr(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    lrs, smoothed = r["lrs"], r["smoothed_losses"]
    head = Text(f"learning-rate range test: {r['config']}, {r['optimizer']}, lr from {fmt(r['start'])} to "
                f"{fmt(r['end'])} over at most {r['steps']} steps")
    if r["stopped_early"]:
        ran = Text(f"stopped after {len(lrs)} step(s): {r['stop_reason']}")
    else:
        ran = Text(f"ran all {len(lrs)} steps; the loss never passed 4× its minimum (try a larger --end)")
    blocks: list = [head, ran]
    if lrs:
        blocks.append(Text(f"smoothed loss, lr {fmt(lrs[0])} → {fmt(lrs[-1])} (log scale): "
                           f"{sparkline(smoothed, width=min(60, len(smoothed)))}"))
    t = FitTable("suggestions", [Col("rule", align="left"), Col("lr")], plain=plain, wide=wide)
    t.add_row("valley of the smoothed loss (the suggestion)", fmt(r["suggested_lr"]) if r["suggested_lr"] else "none")
    t.add_row("steepest descent of the smoothed loss", fmt(r["steepest_lr"]) if r.get("steepest_lr") else "none")
    t.add_row("the smoothed loss's minimum / 10", fmt(r["lr_min"]) if r["lr_min"] else "none")
    blocks.append(t)
    pick = r["suggested_lr"]
    if pick:
        blocks.append(Text(f"use it: backprop train --config {r['config']} --set optimizer.lr={pick:.2g}",
                           style="" if plain else "bold"))
    elif lrs:
        blocks.append(Text(f"no suggestion: the smoothed loss never fell {r['clear_drop']:.0%} below its start "
                           f"(it fell {max(r['drop'], 0):.0%}): no clear descent at any lr of the sweep; check train's "
                           "warnings (vanishing gradients?) or try a smaller --start", style="" if plain else "bold yellow"))
    else:
        blocks.append(Text("no suggestion: no step of the sweep finished; try a smaller --start",
                           style="" if plain else "bold yellow"))
    print_blocks(console, blocks)

"""`backprop explain`: the two-weight scalar example, worked step by step."""

from typing import Annotated

import typer

from backprop_cli.cli.common import command, emit, render_with
from backprop_cli.cli.options import Format, FormatOpt, WideOpt, examples
from backprop_cli.limits import MAX_EXPLAIN_UPDATES


@command(epilog=examples("backprop explain", "backprop explain --x 1.5 --y 0.5 --w1 0.8 --w2 -0.4",
                             "backprop explain --updates 10 --lr 0.5"))
def explain(
    x: Annotated[float, typer.Option("--x", help="The input.")] = 2.0,
    y: Annotated[float, typer.Option("--y", help="The target.")] = 1.0,
    w1: Annotated[float, typer.Option("--w1", help="First weight (input → hidden).")] = 0.5,
    w2: Annotated[float, typer.Option("--w2", help="Second weight (hidden → output).")] = 0.3,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate η of the SGD update.")] = 0.1,
    updates: Annotated[int, typer.Option("--updates", "--steps", min=1, max=MAX_EXPLAIN_UPDATES, help="Repeat the SGD update N times and "
                                         "show the loss falling (--steps is the old spelling).")] = 1,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """The classic two-weight scalar example, worked step by step: forward, chain rule, autograd, update.

    One input, one hidden and one output neuron, no bias, identity activation, L = ½(y − ŷ)².
    (train --no-zero-grad shows what happens when gradients are not reset between steps.)
    """
    from backprop_cli.render.documents import explain_document
    from backprop_cli.runs.explain import explain as work

    result = work(x, y, w1, w2, lr, updates)
    emit(format, explain_document(result), lambda con, plain: render_with("render_explain", con, plain, result, wide=wide))

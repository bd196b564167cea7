"""`backprop explain`: the two-weight scalar example worked step by step, or with --config the configured
network's chain rule on one batch, layer by layer."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, emit, load, read_data, render_with, single_process
from backprop_cli.cli.options import BatchOpt, Format, FormatOpt, SetOpt, WideOpt, examples
from backprop_cli.limits import MAX_COUNT, MAX_EXPLAIN_UPDATES


@command(loads_torch=True, epilog=examples("backprop explain", "backprop explain --x 1.5 --y 0.5 --w1 0.8 --w2 -0.4",
                         "backprop explain --updates 10 --lr 0.5", "backprop explain --config configs/seed.yaml",
                         "backprop explain -c configs/deep_relu.yaml --batch 3 --sample 2 --format json"))
def explain(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Instead of the scalar example: the chain "
                                                   "rule of this config's network on one batch, layer by layer, "
                                                   "beside autograd.", show_default=False,
                                                   rich_help_panel="Config")] = None,
    set_: SetOpt = None,
    batch: BatchOpt = None,
    sample: Annotated[int, typer.Option("--sample", min=0, max=MAX_COUNT, help="With --config: the row of the batch "
                                        "whose numbers are shown.", rich_help_panel="Config")] = 0,
    x: Annotated[float, typer.Option("--x", help="The input.")] = 2.0,
    y: Annotated[float, typer.Option("--y", help="The target.")] = 1.0,
    w1: Annotated[float, typer.Option("--w1", help="First weight (input → hidden).")] = 0.5,
    w2: Annotated[float, typer.Option("--w2", help="Second weight (hidden → output).")] = 0.3,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate η of the SGD update.")] = 0.1,
    updates: Annotated[int, typer.Option("--updates", "--steps", min=1, max=MAX_EXPLAIN_UPDATES,
                                         help="Repeat the SGD update N times and show the loss falling (--steps "
                                         "is the old spelling).")] = 1,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """The classic two-weight scalar example, worked step by step: forward, chain rule, autograd, update.

    One input, one hidden and one output neuron, no bias, identity activation, L = ½(y − ŷ)². With --config:
    the configured network instead, δ flowing back from the loss through every layer.
    (train --no-zero-grad shows what happens when gradients are not reset between steps.)
    """
    if config is not None:
        return _explain_config(config, set_, batch or 0, sample, wide, format)
    from backprop_cli.render.documents import explain_document
    from backprop_cli.runs.explain import explain as work

    result = work(x, y, w1, w2, lr, updates)
    emit(format, explain_document(result), lambda con, plain: render_with("render_explain", con, plain, result, wide=wide))


def _explain_config(config: Path, set_: Optional[list[str]], batch: int, sample: int, wide: bool, format) -> None:
    from backprop_cli.render.learner_documents import explain_net_document

    single_process("explain")
    cfg = load(config, set_, ["device=cpu"])
    table = read_data(cfg)
    from backprop_cli.runs.explain_net import explain_config as work

    result = work(cfg, table, batch, sample)
    emit(format, explain_net_document(result),
         lambda con, plain: render_with("render_explain_net", con, plain, result, wide=wide))

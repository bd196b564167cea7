"""`backprop check-grads`: autograd against the hand-written chain rule and finite differences."""

from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import (command, emit, flops, load, read_data, render_with, single_process,
                                     training_overrides)
from backprop_cli.cli.options import (BatchOpt, CheckpointOpt, ConfigOpt, DeviceOpt, Format, FormatOpt, SetOpt,
                                      ThreadsOpt, WideOpt, examples)
from backprop_cli.errors import EXIT_CHECK_FAILED
from backprop_cli.limits import MAX_COUNT


@command("check-grads", epilog=examples(
    "backprop check-grads --config configs/seed.yaml",
    "backprop check-grads -c configs/csv.yaml --set model.activation=gelu",
    "backprop check-grads -c configs/regression.yaml --samples 100 --format json"))
def check_grads(
    config: ConfigOpt,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    batch: BatchOpt = None,
    samples: Annotated[Optional[int], typer.Option("--samples", min=1, max=MAX_COUNT, help="Finite differences on N random "
                                                   "elements per parameter (default: every element when the model "
                                                   "has at most 20,000 parameters, else 256).",
                                                   rich_help_panel="Config")] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Check autograd's gradients against a hand-written chain rule and float64 finite differences.

    Exit code 1 if any parameter's gradients disagree beyond the tolerance of its dtype.
    """
    single_process("check-grads")
    cfg = load(config, set_, training_overrides(None, device))
    table = read_data(cfg)
    from backprop_cli.render.documents import check_document
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.inspection import check_gradients, prepare

    set_threads(threads, flops(cfg))
    run, done = prepare(cfg, checkpoint, table=table)
    result = check_gradients(run, done if batch is None else batch, samples, seed=cfg.seed)
    emit(format, check_document(result), lambda con, plain: render_with("render_check", con, plain, result, wide=wide))
    if not result["pass"]:
        raise typer.Exit(EXIT_CHECK_FAILED)

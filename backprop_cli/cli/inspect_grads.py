"""`backprop inspect-grads`: one batch's gradients, measured (runs.inspection)."""

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import (check_command_outputs, command, emit, flops, load, read_data, render_with,
                                     single_process, tensor_linewidth, training_overrides)
from backprop_cli.cli.options import (BatchOpt, CheckpointOpt, ConfigOpt, DeviceOpt, Format, FormatOpt, NoZeroGradOpt,
                                      SetOpt, ThreadsOpt, WideOpt, examples)
from backprop_cli.errors import ConfigError, shown
from backprop_cli.limits import MAX_COUNT


@command("inspect-grads", loads_torch=True, epilog=examples(
    "backprop inspect-grads --config configs/seed.yaml",
    "backprop inspect-grads -c configs/regression.yaml --train-steps 100 --clip 1",
    "backprop inspect-grads -c configs/seed.yaml --format json --out grads.npz"))
def inspect_grads(
    config: ConfigOpt,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    batch: BatchOpt = None,
    train_steps: Annotated[int, typer.Option("--train-steps", "--steps", min=0, max=MAX_COUNT, help="Train N steps first (with the "
                                             "config's own options, as train would), then inspect the next batch. "
                                             "(--steps is the old spelling.)", rich_help_panel="Config")] = 0,
    clip: Annotated[Optional[float], typer.Option("--clip", metavar="MAX_NORM",
                                                  help="Also show the gradients after clip_grad_norm_(MAX_NORM).",
                                                  rich_help_panel="Output")] = None,
    full: Annotated[bool, typer.Option("--full", help="Print every gradient value, however large the tensor.",
                                       rich_help_panel="Output")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Dump the gradients to .pt, .npz or .json.",
                                                rich_help_panel="Output")] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    no_zero_grad: NoZeroGradOpt = False,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Show every parameter's .grad for one batch: statistics, warnings and the values themselves.

    Runs forward, loss and backward once and stops before optimizer.step(): these are exactly the
    gradients the next step would use.
    """
    single_process("inspect-grads")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):  # as train.clip_grad_norm
        raise ConfigError(f"--clip: must be a finite number greater than 0 (got {clip:g})")
    cfg = load(config, set_, training_overrides(None, device, no_zero_grad))
    check_command_outputs(cfg, config, {"--out": out}, {"--checkpoint": checkpoint})
    table = read_data(cfg)
    from backprop_cli.render.documents import inspect_document, json_text
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.inspection import dump_gradients, inspect_gradients, prepare

    set_threads(threads, flops(cfg))
    run, done = prepare(cfg, checkpoint, train_steps, table)
    result = inspect_gradients(run, done if batch is None else batch, clip, full, tensor_linewidth(wide))
    document = inspect_document(result)
    if out is not None:
        dump_gradients(out, result, json_text(document))
    emit(format, document, lambda con, plain: render_with("render_inspect", con, plain, result, wide=wide))
    if out is not None:
        typer.echo(shown(f"wrote {out}"), err=True)

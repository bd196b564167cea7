"""`backprop find-lr`: the learning-rate range test (runs.lrfind)."""

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import (check_command_outputs, command, emit, flops, load, read_data, render_with,
                                     single_process, training_overrides)
from backprop_cli.cli.options import ConfigOpt, DeviceOpt, Format, FormatOpt, SetOpt, ThreadsOpt, WideOpt, examples
from backprop_cli.errors import ConfigError, shown
from backprop_cli.limits import MAX_COUNT


@command("find-lr", loads_torch=True, epilog=examples(
    "backprop find-lr --config configs/regression.yaml",
    "backprop find-lr -c configs/regression.yaml --set optimizer=adam --plot lr.png",
    "backprop find-lr -c configs/seed.yaml --start 1e-5 --end 1 --format json"))
def find_lr(
    config: ConfigOpt,
    set_: SetOpt = None,
    start: Annotated[float, typer.Option("--start", help="The first learning rate.", rich_help_panel="Sweep")] = 1e-7,
    end: Annotated[float, typer.Option("--end", help="The last learning rate.", rich_help_panel="Sweep")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Steps of the sweep (at most; it stops when the loss "
                                       "blows up).", rich_help_panel="Sweep")] = 100,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the loss against the learning rate (.png "
                                                 "or .svg).", rich_help_panel="Output")] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Find a learning rate: train from the initial weights while the lr grows exponentially from --start
    to --end, stop when the smoothed loss passes 4× its minimum, and suggest an lr inside its valley
    (fastai's rule).

    The same loop as train (batches, clipping, precision); the config's schedule is replaced by the
    sweep. Nothing is written but --plot: the config and any checkpoint are untouched.
    """
    single_process("find-lr")
    problems = []
    if not (start > 0 and math.isfinite(start)):
        problems.append(f"--start: must be a number greater than 0 (got {start:g})")
    if not (end > 0 and math.isfinite(end)):
        problems.append(f"--end: must be a number greater than 0 (got {end:g})")
    if not problems and start >= end:
        problems.append(f"--start must be below --end (got --start {start:g}, --end {end:g})")
    if steps < 3:
        problems.append(f"--steps: the sweep needs at least 3 steps (got {steps})")
    elif steps > MAX_COUNT:
        problems.append(f"--steps: must be at most {MAX_COUNT} (got {steps})")
    if not problems:
        from backprop_cli.runs.lrfind import too_close  # plain Python: no torch yet

        if too_close(start, end, steps):
            problems.append(f"--start and --end are too close for {steps} steps: consecutive learning rates would "
                            f"be the same number (got --start {start!r}, --end {end!r}); widen the range"
                            + ("" if too_close(start, end, 3) else " or give fewer --steps"))
    if problems:
        raise ConfigError(problems)
    cfg = load(config, set_, training_overrides(None, device))
    check_command_outputs(cfg, config, {"--plot": plot})
    table = read_data(cfg)
    from backprop_cli.config import optimizer_label
    from backprop_cli.render.documents import find_lr_document
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.lrfind import find_lr as sweep

    set_threads(threads, flops(cfg))
    result = sweep(cfg, start=start, end=end, steps=steps, table=table)
    result["config"] = str(config)
    result["optimizer"] = " ".join(w for w in optimizer_label(cfg.optimizer).split() if not w.startswith("lr="))
    failed = None  # a figure that cannot be drawn costs only itself: the result is shown, then exit 2
    if plot is not None:
        from backprop_cli.errors import OutputError
        from backprop_cli.render.plots import lr_figure

        try:
            lr_figure(plot, result["lrs"], result["losses"], result["smoothed_losses"], result["suggested_lr"],
                      result["lr_min"], title=f"{Path(config).name}: {result['optimizer']}, learning-rate range test")
        except OutputError as e:
            failed, plot = e, None
    emit(format, find_lr_document(result), lambda con, plain: render_with("render_find_lr", con, plain, result, wide=wide))
    if plot is not None:
        typer.echo(shown(f"wrote plot: {plot}"), err=True)
    if failed is not None:
        raise failed

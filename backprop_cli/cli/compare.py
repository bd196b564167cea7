"""`backprop compare-optimizers`: several optimizers from one initialisation (runs.compare)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import (check_command_outputs, command, emit, flops, load, read_data, render_with,
                                     single_process, torch_loaded, training_overrides)
from backprop_cli.cli.options import (SeedsOpt, ConfigOpt, DeviceOpt, EpochsOpt, Format, FormatOpt, MetricsOpt, NoZeroGradOpt,
                                      QuietOpt, SetOpt, StepsOpt, ThreadsOpt, WideOpt, examples, parse_size)
from backprop_cli.errors import BackpropError, ConfigError, OutputError, shown


@command("compare-optimizers", loads_torch=True, epilog=examples(
    "backprop compare-optimizers --config configs/compare.yaml --plot compare.png",
    "backprop compare-optimizers -c configs/regression.yaml -o sgd:lr=0.5 -o adam",
    "backprop compare-optimizers -c configs/compare.yaml --seeds 3 --steps 100",
    "backprop compare-optimizers -c configs/seed.yaml --format json > runs.json"))
def compare_optimizers(
    config: ConfigOpt,
    set_: SetOpt = None,
    optimizer: Annotated[Optional[list[str]], typer.Option("--optimizer", "-o", metavar="SPEC",
                                                           help="An optimizer: NAME, or NAME:KEY=VALUE with more "
                                                           "KEY=VALUE after commas (-o sgd:lr=0.1 or -o "
                                                           "adam:lr=0.01); repeatable (default: the "
                                                           "optimizers of the config's compare section, else SGD "
                                                           "vs Adam).", rich_help_panel="Config")] = None,
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    no_zero_grad: NoZeroGradOpt = False,
    seeds: SeedsOpt = 1,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a .png or .svg figure of loss and grad "
                                                 "norm per step.", rich_help_panel="Output")] = None,
    plot_size: Annotated[str, typer.Option("--plot-size", metavar="WxH", help="Figure size in pixels.",
                                           rich_help_panel="Output")] = "1200x500",
    metrics: MetricsOpt = None,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Train several optimizers from the same initial weights on the same batches, side by side.

    Each run is train's run of the config with another optimizer: clipping, the schedule, precision
    and the non-finite policy apply as in train. With data.validation every run is evaluated as train
    evaluates (train.eval_every, early_stopping, restore_best) and the runs are ranked by val_loss;
    without it, by the training loss (the output says which). A run that diverges is marked; the others
    go on (exit 3 only when every run diverged).
    """
    single_process("compare-optimizers")
    size = parse_size(plot_size)
    cfg = load(config, set_, training_overrides(steps, device, no_zero_grad, epochs))
    specs = _optimizer_specs(optimizer)
    check_command_outputs(cfg, config, {"--plot": plot, "--metrics": metrics})
    table = read_data(cfg)
    from backprop_cli.errors import EXIT_NONFINITE
    from backprop_cli.render.documents import compare_document
    from backprop_cli.render.plots import compare_figure
    from backprop_cli.render.compare import CompareProgress
    from backprop_cli.render.console import make_console, plain_output
    from backprop_cli.runs import compare as cmp
    from backprop_cli.runs.distributed import set_threads

    set_threads(threads, flops(cfg))
    specs = specs or cmp.default_optimizers(cfg)
    stream = sys.stderr if format == Format.json else sys.stdout
    console = make_console(stream)
    torch_loaded()  # the bars take the loading line's place
    bars = CompareProgress(console, cmp.unique_labels(specs), seeds * cmp.run_length(cfg, table),
                           enabled=not plain_output(stream) and not quiet)
    try:
        results = cmp.compare_optimizers(cfg, specs, None, seeds, progress=bars, table=table)
    finally:
        bars.stop()
    summary = cmp.summarize(results)
    series = cmp.curves(results)
    if metrics is not None:
        cmp.write_metrics(metrics, results)
    failed = None  # a figure that cannot be drawn costs only itself: the rest is shown, then exit 2
    if plot is not None:
        same = "same initial weights and batches" if seeds == 1 else (
            f"mean ± std over {seeds} seeds (per seed, one initialisation and data order for every optimizer)")
        try:
            compare_figure(plot, series, size, title=f"{Path(config).name}: {same}")
        except OutputError as e:
            failed, plot = e, None
    ranking = cmp.ranking(results)
    emit(format, compare_document(results, summary, ranking),
          lambda con, plain: render_with("render_compare", con, plain, summary,
                                     {s["label"]: s["loss_mean"] for s in series}, results[0].steps, quiet,
                                     wide=wide, ranking=ranking))
    for what, path in (("plot", plot), ("metrics", metrics)):
        if path is not None:
            typer.echo(shown(f"wrote {what}: {path}"), err=True)
    if failed is not None:
        raise failed
    if results and all(r.status == "diverged" for r in results):
        raise BackpropError("every run diverged: " + "; ".join(
            f"{r.label}{f' (seed {r.seed})' if seeds > 1 else ''} at step {r.diverged_at}" for r in results)
            + "; lower their lr (-o NAME:lr=...) or set train.clip_grad_norm", exit_code=EXIT_NONFINITE)


def _optimizer_specs(texts: Optional[list[str]]) -> list:
    """``--optimizer`` specs, validated; every problem at once."""
    if not texts:
        return []
    from backprop_cli.config import parse_optimizer

    specs, problems = [], []
    for text in texts:
        try:
            specs.append(parse_optimizer(text))
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return specs

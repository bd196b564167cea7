"""`backprop train`: the options, then runs.training (or one rank of it under torchrun)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import check_command_outputs, command, flops, load, read_data, training_overrides
from backprop_cli.cli.options import (SeedsOpt, ConfigOpt, DeviceOpt, EpochsOpt, Format, FormatOpt, MetricsOpt, NoZeroGradOpt,
                                      QuietOpt, SetOpt, StepsOpt, ThreadsOpt, WideOpt, examples)
from backprop_cli.errors import EXIT_INTERRUPTED, BackpropError, ConfigError, known_error
from backprop_cli.limits import MAX_COUNT


@command(epilog=examples("backprop train --config configs/seed.yaml",
                             "backprop train -c configs/regression.yaml --steps 500 --metrics run.jsonl",
                             "backprop train -c configs/regression.yaml -s optimizer.lr=0.05 --save final.pt"))
def train(
    config: ConfigOpt,
    set_: SetOpt = None,
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", min=1, max=MAX_COUNT, help="Print a row every N steps "
                                                     "(default: train.log_every, else about 20-50 rows).",
                                                     rich_help_panel="Output")] = None,
    quiet: QuietOpt = False,
    metrics: MetricsOpt = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write a checkpoint (.pt) at the end (and on "
                                                 "Ctrl-C, or the last good state on a non-finite stop).",
                                                 rich_help_panel="Checkpoints")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", min=1, max=MAX_COUNT, help="Also write --save every N steps.",
                                                      rich_help_panel="Checkpoints")] = None,
    save_best: Annotated[Optional[Path], typer.Option("--save-best", help="Write the checkpoint of the evaluation "
                                                      "with the lowest val_loss (needs data.validation).",
                                                      rich_help_panel="Checkpoints")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue from a checkpoint up to train.steps "
                                                   "(same model; lr and steps may change).",
                                                   rich_help_panel="Checkpoints")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option("--tensorboard", metavar="DIR",
                                                        help="Write TensorBoard scalars and histograms to DIR "
                                                        "(needs the tensorboard extra).",
                                                        rich_help_panel="Output")] = None,
    detect_anomaly: Annotated[bool, typer.Option("--detect-anomaly", help="Debugging: torch.autograd anomaly "
                                                 "mode names the operation that made a NaN (slow).",
                                                 rich_help_panel="Teaching")] = False,
    threads: ThreadsOpt = None,
    no_zero_grad: NoZeroGradOpt = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw the dashboard of the run (.png or .svg) at "
                                                 "the end, as backprop plot does from --metrics.",
                                                 rich_help_panel="Output")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=2, max=100, metavar="K",
                                                 help="K-fold cross-validation (stratified for classification, "
                                                 "seeded): one model per fold, one line per fold and the mean ± "
                                                 "std of every validation metric; writes no model.",
                                                 rich_help_panel="Evaluation")] = None,
    seeds: SeedsOpt = 1,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Train the configured network, printing the loss and gradient norms step by step.

    Under torchrun (torchrun --standalone --nproc_per_node=N -m backprop_cli train ...) it trains with
    DistributedDataParallel; rank 0 prints and writes the files.
    """
    options = dict(locals())
    from backprop_cli.torchrun import under_torchrun

    if under_torchrun():
        _train_distributed(options)
    _train_body(**options)


def _train_body(config, set_, steps, epochs, device, log_every, quiet, metrics, save, save_every, save_best, resume,
                tensorboard, detect_anomaly, threads, no_zero_grad, plot, folds, seeds, wide, format) -> None:
    from backprop_cli.runs.options import TrainOptions

    cfg = load(config, set_, training_overrides(steps, device, no_zero_grad, epochs))
    opts = TrainOptions(metrics=metrics, save=save, save_every=save_every, save_best=save_best, resume=resume,
                        log_every=log_every, detect_anomaly=detect_anomaly, tensorboard=tensorboard, plot=plot,
                        folds=folds, seeds=seeds if seeds > 1 else None)
    opts.check(cfg)
    if folds is not None or opts.seeds is not None:
        _cross_validate(cfg, opts, folds, opts.seeds, threads, format)
        return
    # --save may name the --resume checkpoint: it is read whole at the start and replaced atomically
    outputs = {"--metrics": metrics, "--save-best": save_best, "--plot": plot, "--tensorboard": tensorboard}
    check_command_outputs(cfg, config, {**outputs, "--save": save})
    check_command_outputs(cfg, config, outputs, {"--resume": resume})
    if tensorboard is not None:
        from backprop_cli.io.paths import check_folder

        check_folder(tensorboard, "TensorBoard folder")
    from backprop_cli.config import start_summary
    from backprop_cli.render.train import TrainReport
    from backprop_cli.render.console import make_console, plain_output

    if format == Format.json:
        reporter = TrainReport(make_console(sys.stderr), plain=plain_output(sys.stderr), quiet=quiet,
                               json_out=sys.stdout, wide=wide)
    else:
        reporter = TrainReport(make_console(), plain=plain_output(), quiet=quiet, wide=wide)
    with reporter.starting(start_summary(cfg)):  # on a terminal, until the start panel replaces it
        table = read_data(cfg)  # every data error before torch is imported

        from backprop_cli.runs.distributed import set_threads
        from backprop_cli.runs.training import run_training

        opts.threads = set_threads(threads, flops(cfg))
        run_training(cfg, opts, reporter, table)

def _cross_validate(cfg, opts, folds, seeds, threads, format) -> None:
    """--folds K or --seeds K: K runs, one line each, then the mean ± std."""
    from backprop_cli.render.console import make_console, plain_output
    from backprop_cli.runs.folds import cross_validate, raw_config, repeat_seeds
    from backprop_cli.torchrun import under_torchrun

    if under_torchrun():
        raise BackpropError(f"{'--folds' if folds else '--seeds'} runs in one process; run it without torchrun")
    if seeds is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split_seed": cfg.split_seed})})
    encoder = None  # --folds: each fold fills missing cells with its own training rows' statistics
    if folds is not None:
        from backprop_cli.data.load import read_fold_table

        raw, encoder = read_fold_table(raw_config(cfg))  # every data error before torch is imported
    else:
        raw = read_data(cfg)
    from backprop_cli.runs.distributed import set_threads

    opts.threads = set_threads(threads, flops(cfg))
    console = make_console(sys.stderr if format == Format.json else None)
    plain = plain_output(sys.stderr) if format == Format.json else plain_output()
    from backprop_cli.render.folds import fold_line, render_folds, render_seeds, seed_line

    def on_run(i, result):
        if format == Format.json:
            console.print(fold_line(result, folds) if folds is not None else seed_line(result, seeds), soft_wrap=True)

    from backprop_cli.render.documents import finite, json_text

    if folds is not None:
        result = cross_validate(cfg, folds, raw, opts, on_run, encoder)
        doc, render = {"status": "done", "cross_validation": result}, render_folds
    else:
        result = repeat_seeds(cfg, seeds, raw, opts, on_run)
        doc, render = {"status": "done", "seeds": result}, render_seeds
    if format == Format.json:
        sys.stdout.write(json_text(finite(doc)) + "\n")
    else:
        render(console, plain, result)


SHARED_ERROR_GRACE_S = 10.0  # under torchrun, how long other ranks wait for rank 0 to report a shared error


def _train_distributed(options: dict) -> None:
    """One rank under torchrun. Problems every rank meets alike (config, data) are printed by rank 0;
    others name their rank. The process leaves through distributed.finish (os._exit)."""
    import traceback

    from backprop_cli.errors import DataError
    from backprop_cli.render.console import print_errors
    from backprop_cli.runs import distributed

    rank = distributed.rank()
    code = 0
    try:
        _train_body(**options)
    except BackpropError as e:
        code = e.exit_code
        lines = e.problems if isinstance(e, ConfigError) else [str(e)]
        if rank == 0:
            print_errors(lines)
        elif not isinstance(e, (ConfigError, DataError)):
            print_errors([f"[rank {rank}] {line}" for line in lines])
        else:  # rank 0 says it: leave it time to, before torchrun stops the ranks left when this one exits
            import time

            time.sleep(SHARED_ERROR_GRACE_S)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BaseException as e:  # noqa: BLE001 - report, then leave all ranks
        known = known_error(e)
        if known is not None:
            print_errors([f"[rank {rank}] {known}"])
            distributed.finish(known.exit_code)
        traceback.print_exc()
        print_errors([f"[rank {rank}] unexpected error; the other ranks are stopped by torchrun"])
        code = 1
    distributed.finish(code)

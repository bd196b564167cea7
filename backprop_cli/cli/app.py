"""The `backprop` command. Thin: parse options, call the library, map errors to exit codes.

Nothing imported at module level here may import torch (or pydantic): `backprop --help` stays fast.
No `from __future__ import annotations` here either: typer would then evaluate each command's
annotations from their text (about 10 ms of every start, measured).
"""

import functools
import inspect
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from backprop_cli import __version__
from backprop_cli.errors import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, BackpropError, ConfigError,
                                 OutputClosed, known_error)
from backprop_cli.limits import MAX_COUNT, MAX_EXPLAIN_UPDATES, MAX_SEEDS


def _flags_take_no_value() -> None:
    """typer shows a `<bool>` placeholder after every flag (--quiet <bool>), as if it took a value; a
    flag takes none, so its type column stays empty."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flags_fixed", False):
        return  # a typer without the placeholder (or this fix already made)

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flags_fixed = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()


def _reflow(fn: Callable) -> Callable:
    """The docstring as --help shows it: each paragraph on one line, wrapped by the terminal, never
    broken mid-sentence where the source happens to break it."""
    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    fn.__doc__ = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    return fn


def _examples(*commands: str) -> str:
    """An --help epilog: each example on its own line (tests/test_help.py runs every one)."""
    return "Examples:\n\n" + "\n\n".join(f"  {c}" for c in commands)


app = typer.Typer(
    name="backprop",
    help="See backpropagation at work: train a small network from a YAML file and watch its "
    "loss and gradients step by step.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show or check a config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")

# --------------------------------------------------------------------------- shared options

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False, rich_help_panel="Config")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY.PATH=VALUE",
                 help="Override a config key (value parsed as YAML); repeatable.", rich_help_panel="Config"),
]


StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, max=MAX_COUNT, help="Total optimizer steps; same as --set "
                                                 "train.steps=N.", rich_help_panel="Config")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, max=MAX_COUNT, help="Passes over the training rows; same as "
                                                   "--set train.epochs=N (instead of train.steps).",
                                                   rich_help_panel="Config")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Same as --set device=DEV (auto, cpu, cuda, "
                                                  "cuda:N, mps).", rich_help_panel="Config")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: "
                                                   "OMP_NUM_THREADS, else torch's own choice, shared out among "
                                                   "torchrun's processes).", rich_help_panel="Config")]
NoZeroGradOpt = Annotated[bool, typer.Option("--no-zero-grad", help="Teaching switch: skip optimizer.zero_grad() so "
                                             "gradients accumulate across steps; same as --set train.zero_grad=false.",
                                             rich_help_panel="Teaching")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print the final summary only: no start panel, step "
                                        "rows, progress bars or notes.", rich_help_panel="Output")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Write every step's record (of every run) to "
                                                    "a .jsonl or .csv file.", rich_help_panel="Output")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Show every column of every table, however wide (a narrow "
                                       "terminal then wraps the lines).", rich_help_panel="Output")]


class Format(str, Enum):
    table = "table"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", help="table (for people), or json: one JSON document alone "
                                           "on stdout (progress and step rows go to stderr).",
                                           rich_help_panel="Output")]


def _training_overrides(steps: Optional[int], device: Optional[str], no_zero_grad: bool = False,
                        epochs: Optional[int] = None) -> list[str]:
    """The common options of every command that trains, as the config overrides they stand for."""
    if steps is not None and epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    extra = []
    if steps is not None:
        extra += [f"train.steps={steps}", "train.epochs=null"]
    if epochs is not None:
        extra += [f"train.epochs={epochs}", "train.steps=null"]
    if device is not None:
        extra.append(f"device={device}")
    if no_zero_grad:
        extra.append("train.zero_grad=false")
    return extra


def _fail(messages: list[str], code: int) -> None:
    from backprop_cli.render.report import print_errors

    print_errors(messages)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Known problems become one `error: ...` line per problem on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OutputClosed, BrokenPipeError):
            _output_closed()
        except ConfigError as e:
            _fail(e.problems, e.exit_code)
        except BackpropError as e:
            _fail([str(e)], e.exit_code)
        except KeyboardInterrupt:
            _fail(["interrupted"], EXIT_INTERRUPTED)
        except (RuntimeError, MemoryError) as e:
            known = known_error(e)
            if known is None:
                raise
            _fail([str(known)], known.exit_code)

    return wrapper


def _output_closed() -> None:
    """The reader of our output went away (``backprop ... | head``): leave quietly with 141, the code a
    shell gives a command killed by SIGPIPE. Later writes (and Python's final flush) go to /dev/null."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    raise typer.Exit(OutputClosed.exit_code)


def _load(config: Path, overrides: Optional[list[str]], extra: Optional[list[str]] = None):
    from backprop_cli.config import load_config

    return load_config(config, list(overrides or []) + list(extra or []))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backprop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    """See backpropagation at work."""


# --------------------------------------------------------------------------- train


@app.command(epilog=_examples("backprop train --config configs/seed.yaml",
                             "backprop train -c configs/regression.yaml --steps 500 --metrics run.jsonl",
                             "backprop train -c configs/regression.yaml -s optimizer.lr=0.05 --save final.pt"))
@handle_errors
@_reflow
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
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Train the configured network, printing the loss and gradient norms step by step.

    Under torchrun (torchrun --standalone --nproc_per_node=N -m backprop_cli train ...) it trains with
    DistributedDataParallel; rank 0 prints and writes the files.
    """
    options = dict(locals())
    from backprop_cli.runs.torchrun import under_torchrun

    if under_torchrun():
        _train_distributed(options)
    _train_body(**options)


def _train_body(config, set_, steps, epochs, device, log_every, quiet, metrics, save, save_every, save_best, resume,
                tensorboard, detect_anomaly, threads, no_zero_grad, plot, wide, format) -> None:
    cfg = _load(config, set_, _training_overrides(steps, device, no_zero_grad, epochs))
    if save_best is not None and getattr(cfg.data, "validation", None) is None:
        raise ConfigError("--save-best needs validation data: set data.validation to a fraction (e.g. 0.2) "
                          "or a CSV file")
    # --save may name the --resume checkpoint: it is read whole at the start and replaced atomically
    _check_outputs(cfg, config, {"--metrics": metrics, "--save": save, "--save-best": save_best, "--plot": plot,
                                 "--tensorboard": tensorboard})
    _check_outputs(cfg, config, {"--metrics": metrics, "--save-best": save_best, "--plot": plot,
                                 "--tensorboard": tensorboard}, {"--resume": resume})
    if tensorboard is not None:
        from backprop_cli.io.outputs import check_folder

        check_folder(tensorboard, "TensorBoard folder")
    from backprop_cli.config import start_summary
    from backprop_cli.render.report import TrainReport, make_console, plain_output

    if format == Format.json:
        reporter = TrainReport(make_console(sys.stderr), plain=plain_output(sys.stderr), quiet=quiet,
                               json_out=sys.stdout, wide=wide)
    else:
        reporter = TrainReport(make_console(), plain=plain_output(), quiet=quiet, wide=wide)
    with reporter.starting(start_summary(cfg)):  # on a terminal, until the start panel replaces it
        table = _read_data(cfg)  # every data error before torch is imported

        from backprop_cli.runs.distributed import set_threads
        from backprop_cli.runs.training import TrainOptions, run_training

        threads_why = set_threads(threads, _flops(cfg))
        run_training(cfg, TrainOptions(metrics=metrics, save=save, save_every=save_every, save_best=save_best,
                                       resume=resume,
                                       log_every=log_every, detect_anomaly=detect_anomaly, tensorboard=tensorboard,
                                       plot=plot, threads=threads_why),
                     reporter, table)


def _check_outputs(cfg, config: Path, outputs: dict, inputs: Optional[dict] = None) -> None:
    """Output paths are checked before any work: a bad one costs nothing and writes nothing. An output
    is never one of the command's inputs (the config, its data files, a checkpoint) nor another output."""
    from backprop_cli.io.outputs import OUTPUT_KINDS, check_outputs, check_writable

    for option, path in outputs.items():
        if path is not None and option in OUTPUT_KINDS:
            suffixes, what = OUTPUT_KINDS[option]
            check_writable(path, suffixes, what)
    check_outputs(outputs, {**_inputs_of(cfg, config), **(inputs or {})})


def _inputs_of(cfg, config: Path) -> dict:
    """The files a config makes a command read, by the name the user knows them by."""
    from backprop_cli.config import CsvData

    inputs = {"--config": config}
    if isinstance(cfg.data, CsvData):
        inputs["data.path"] = cfg.data_path()
    if cfg.validation_path() is not None:
        inputs["data.validation"] = cfg.validation_path()
    return inputs


def _flops(cfg) -> float:
    from backprop_cli.config import flops_per_step

    return flops_per_step(cfg)


def _read_data(cfg):
    from backprop_cli.data.load import read_table

    return read_table(cfg)


SHARED_ERROR_GRACE_S = 10.0  # under torchrun, how long other ranks wait for rank 0 to report a shared error


def _train_distributed(options: dict) -> None:
    """One rank under torchrun. Problems every rank meets alike (config, data) are printed by rank 0;
    others name their rank. The process leaves through distributed.finish (os._exit)."""
    import traceback

    from backprop_cli.runs import distributed
    from backprop_cli.errors import DataError
    from backprop_cli.render.report import print_errors

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


def _single_process(command: str) -> None:
    from backprop_cli.runs.torchrun import under_torchrun

    if under_torchrun():
        raise BackpropError(f"{command} runs in one process; run it without torchrun "
                            "(only `backprop train` uses DistributedDataParallel)")


# --------------------------------------------------------------------------- gradients

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Take the weights (and step) from "
                                                       "this checkpoint instead of the seeded init.",
                                                       rich_help_panel="Config")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", min=0, max=MAX_COUNT, help="Which batch of the data order, from 0 "
                                                 "(default: the one the next step would use).",
                                                 rich_help_panel="Config")]


@app.command("inspect-grads", epilog=_examples(
    "backprop inspect-grads --config configs/seed.yaml",
    "backprop inspect-grads -c configs/regression.yaml --train-steps 100 --clip 1",
    "backprop inspect-grads -c configs/seed.yaml --format json --out grads.npz"))
@handle_errors
@_reflow
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
    _single_process("inspect-grads")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):  # as train.clip_grad_norm
        raise ConfigError(f"--clip: must be a finite number greater than 0 (got {clip:g})")
    cfg = _load(config, set_, _training_overrides(None, device, no_zero_grad))
    _check_outputs(cfg, config, {"--out": out}, {"--checkpoint": checkpoint})
    table = _read_data(cfg)
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import inspect_document
    from backprop_cli.runs.inspection import dump_gradients, inspect_gradients, prepare

    set_threads(threads, _flops(cfg))
    run, done = prepare(cfg, checkpoint, train_steps, table)
    result = inspect_gradients(run, done if batch is None else batch, clip, full, _tensor_linewidth(wide))
    if out is not None:
        dump_gradients(out, result)
    _emit(format, inspect_document(result), lambda con, plain: _render("render_inspect", con, plain, result, wide=wide))
    if out is not None:
        typer.echo(f"wrote {out}", err=True)


@app.command("check-grads", epilog=_examples(
    "backprop check-grads --config configs/seed.yaml",
    "backprop check-grads -c configs/csv.yaml --set model.activation=gelu",
    "backprop check-grads -c configs/regression.yaml --samples 100 --format json"))
@handle_errors
@_reflow
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
    _single_process("check-grads")
    cfg = _load(config, set_, _training_overrides(None, device))
    table = _read_data(cfg)
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import check_document
    from backprop_cli.runs.inspection import check_gradients, prepare

    set_threads(threads, _flops(cfg))
    run, done = prepare(cfg, checkpoint, table=table)
    result = check_gradients(run, done if batch is None else batch, samples, seed=cfg.seed)
    _emit(format, check_document(result), lambda con, plain: _render("render_check", con, plain, result, wide=wide))
    if not result["pass"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command(epilog=_examples("backprop explain", "backprop explain --x 1.5 --y 0.5 --w1 0.8 --w2 -0.4",
                             "backprop explain --updates 10 --lr 0.5"))
@handle_errors
@_reflow
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
    _emit(format, explain_document(result), lambda con, plain: _render("render_explain", con, plain, result, wide=wide))


def _render(name: str, console, plain: bool, *args, **kwargs) -> None:
    from backprop_cli.render import report

    getattr(report, name)(console, plain, *args, **kwargs)


def _tensor_linewidth(wide: bool) -> int:
    """How wide torch may print tensors: the terminal's width (at most 120; --wide: 120)."""
    from backprop_cli.render.report import make_console

    return 120 if wide else max(40, min(120, make_console().width))


def _emit(format: "Format", doc: dict, render: Callable) -> None:
    """JSON alone on stdout, or the rendered table."""
    if format == Format.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(doc) + "\n")
        return
    from backprop_cli.render.report import make_console, plain_output

    render(make_console(), plain_output())


# --------------------------------------------------------------------------- evaluate and predict

TrainedOpt = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by train --save or "
                                          "--save-best.", show_default=False)]


def _input_file(path: Optional[Path], option: str) -> None:
    """A data file given on the command line is a regular file: checked before torch is imported."""
    if path is not None:
        from backprop_cli.errors import DataError
        from backprop_cli.io.files import open_regular

        try:
            open_regular(path, "file", DataError).close()
        except DataError as e:
            raise DataError(f"{e} ({option})") from None


@app.command(epilog=_examples("backprop init p.yaml --csv configs/data/penguins.csv --target species",
                             "backprop train -c p.yaml --epochs 20 --save-best best.pt -q",
                             "backprop evaluate --checkpoint best.pt",
                             "backprop evaluate --checkpoint best.pt --format json"))
@handle_errors
@_reflow
def evaluate(
    checkpoint: TrainedOpt,
    data: Annotated[Optional[Path], typer.Option("--data", help="A CSV with the training columns (default: the "
                                                 "validation rows of the checkpoint's own config).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Use this config's data section "
                                                   "(and model, which must be the checkpoint's) instead of the "
                                                   "checkpoint's own.")] = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = None,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Loss and metrics of a trained model on a CSV, with the checkpoint's own scaling and class names.

    Classification: accuracy, per-class precision, recall, F1 and support, and the confusion matrix;
    regression: MAE and R² (in the original units).
    """
    _single_process("evaluate")
    cfg = _load(config, set_) if config is not None else None
    _input_file(data, "--data")
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import evaluate_document
    from backprop_cli.runs.prediction import evaluate as work
    from backprop_cli.runs.prediction import load_trained

    set_threads(threads)
    result = work(load_trained(checkpoint, cfg), data)
    _emit(format, evaluate_document(result), lambda con, plain: _render("render_evaluate", con, plain, result, wide=wide))


class PredictFormat(str, Enum):
    csv = "csv"
    json = "json"


@app.command(epilog=_examples("backprop init p.yaml --csv configs/data/penguins.csv --target species",
                             "backprop train -c p.yaml --epochs 20 --save-best best.pt -q",
                             "backprop predict --checkpoint best.pt --data configs/data/penguins_new.csv"))
@handle_errors
@_reflow
def predict(
    checkpoint: TrainedOpt,
    data: Annotated[Path, typer.Option("--data", help="A CSV with the model's feature columns (a target column "
                                       "is ignored).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the predictions here (atomically); default: "
                                                "stdout.")] = None,
    keep: Annotated[Optional[str], typer.Option("--keep", metavar="COLUMN", help="Copy this input column (an id) "
                                                "into the output, first.")] = None,
    threads: ThreadsOpt = None,
    format: Annotated[PredictFormat, typer.Option("--format", help="csv, or json: {\"columns\", \"predictions\": "
                                                  "[{column: value}, ...]}.")] = PredictFormat.csv,
) -> None:
    """One prediction per input row, in input order: the class and its probabilities, or the target values
    in their original units."""
    _single_process("predict")
    _input_file(data, "--data")
    if out is not None:
        from backprop_cli.io.outputs import check_outputs, check_writable

        check_writable(out, (".csv",) if format == PredictFormat.csv else (".json",), "predictions")
        check_outputs({"--out": out}, {"--data": data, "--checkpoint": checkpoint})
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import predictions_text
    from backprop_cli.runs.prediction import load_trained
    from backprop_cli.runs.prediction import predict as work

    set_threads(threads)
    header, rows = work(load_trained(checkpoint), data, keep)
    text = predictions_text(header, rows, format.value)
    if out is None:
        sys.stdout.write(text)
        return
    from backprop_cli.io.outputs import write_atomic

    write_atomic(out, lambda f: f.write(text))
    typer.echo(f"wrote {out} ({len(rows)} predictions)", err=True)


# --------------------------------------------------------------------------- compare


def _plot_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    digits = all(v.isascii() and v.isdigit() and len(v) <= 5 for v in (w, h))  # not '²', not 5,000 digits
    if not sep or not digits or not (100 <= int(w) <= 10000 and 100 <= int(h) <= 10000):
        shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
        raise typer.BadParameter(f"expected WIDTHxHEIGHT in pixels, each 100-10000 (got {shown})")
    return int(w), int(h)


@app.command("compare-optimizers", epilog=_examples(
    "backprop compare-optimizers --config configs/compare.yaml --plot compare.png",
    "backprop compare-optimizers -c configs/regression.yaml -o sgd:lr=0.5 -o adam",
    "backprop compare-optimizers -c configs/compare.yaml --seeds 3 --steps 100",
    "backprop compare-optimizers -c configs/seed.yaml --format json > runs.json"))
@handle_errors
@_reflow
def compare_optimizers(
    config: ConfigOpt,
    set_: SetOpt = None,
    optimizer: Annotated[Optional[list[str]], typer.Option("--optimizer", "-o", metavar="SPEC",
                                                           help="NAME or NAME:KEY=VALUE,... e.g. sgd:lr=0.1,momentum=0.9; "
                                                           "repeatable (default: the config's compare.optimizers, "
                                                           "else SGD vs Adam).", rich_help_panel="Config")] = None,
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    no_zero_grad: NoZeroGradOpt = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=MAX_SEEDS, help="Repeat for K seeds (init and data order) and "
                                       "report mean ± std.", rich_help_panel="Config")] = 1,
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
    and the non-finite policy apply as in train. A run that diverges is marked; the others go on
    (exit 3 only when every run diverged).
    """
    _single_process("compare-optimizers")
    size = _plot_size(plot_size)
    cfg = _load(config, set_, _training_overrides(steps, device, no_zero_grad, epochs))
    specs = _optimizer_specs(optimizer)
    _check_outputs(cfg, config, {"--plot": plot, "--metrics": metrics})
    table = _read_data(cfg)
    from backprop_cli.io.outputs import MetricsWriter

    from backprop_cli.runs import compare as cmp
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import compare_document
    from backprop_cli.errors import EXIT_NONFINITE
    from backprop_cli.render.plots import compare_figure
    from backprop_cli.render.report import CompareProgress, make_console, plain_output

    set_threads(threads, _flops(cfg))
    specs = specs or cmp.default_optimizers(cfg)
    stream = sys.stderr if format == Format.json else sys.stdout
    console = make_console(stream)
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
    if plot is not None:
        same = "same initial weights and batches" if seeds == 1 else (
            f"mean ± std over {seeds} seeds (per seed, one initialisation and data order for every optimizer)")
        compare_figure(plot, series, size, title=f"{Path(config).name}: {same}")
    _emit(format, compare_document(results, summary),
          lambda con, plain: _render("render_compare", con, plain, summary,
                                     {s["label"]: s["loss_mean"] for s in series}, results[0].steps, quiet,
                                     wide=wide))
    for what, path in (("plot", plot), ("metrics", metrics)):
        if path is not None:
            typer.echo(f"wrote {what}: {path}", err=True)
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


# --------------------------------------------------------------------------- plot


@app.command(epilog=_examples("backprop train -c configs/regression.yaml --metrics run.jsonl",
                             "backprop plot run.jsonl --out run.png",
                             "backprop compare-optimizers -c configs/compare.yaml --metrics runs.csv",
                             "backprop plot runs.csv --out runs.svg --size 1800x1000"))
@handle_errors
@_reflow
def plot(
    metrics: Annotated[Path, typer.Argument(help="A metrics file (.jsonl or .csv) from train --metrics or "
                                            "compare-optimizers --metrics.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="The figure, .png or .svg (default: the metrics "
                                                "file's name with .png).")] = None,
    size: Annotated[str, typer.Option("--size", metavar="WxH", help="Figure size in pixels.")] = "1500x850",
) -> None:
    """Draw the dashboard of a run from its metrics file: loss, gradient norm per layer, update-to-data
    ratio per parameter, learning rate, dead or saturated units and activation std per layer.

    A file that stops being readable part-way (a truncated last line) is drawn up to there, with a
    warning naming the line.
    """
    dims = _plot_size(size)
    from backprop_cli.io.outputs import PLOT_SUFFIXES, check_outputs, check_writable, load_metrics
    from backprop_cli.render.plots import dashboard, runs_of

    out = out if out is not None else metrics.with_suffix(".png")
    check_writable(out, PLOT_SUFFIXES, "plot")
    check_outputs({"--out": out}, {"METRICS": metrics})
    got = load_metrics(metrics)
    if got.stopped:
        typer.echo(f"warning: {got.stopped}; plotting the {len(got.records)} record(s) before it", err=True)
    runs = runs_of(got.records)
    dashboard(out, runs, dims, title=metrics.name)
    what = f"{len(got.records)} records" + (f", {len(runs)} runs" if len(runs) > 1 else "")
    typer.echo(f"wrote {out} ({what})")


# --------------------------------------------------------------------------- find-lr


@app.command("find-lr", epilog=_examples(
    "backprop find-lr --config configs/regression.yaml",
    "backprop find-lr -c configs/regression.yaml --set optimizer=adam --plot lr.png",
    "backprop find-lr -c configs/seed.yaml --start 1e-5 --end 1 --format json"))
@handle_errors
@_reflow
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
    to --end, stop when the smoothed loss passes 4× its minimum, and suggest the lr of steepest descent.

    The same loop as train (batches, clipping, precision); the config's schedule is replaced by the
    sweep. Nothing is written but --plot: the config and any checkpoint are untouched.
    """
    _single_process("find-lr")
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
    if problems:
        raise ConfigError(problems)
    cfg = _load(config, set_, _training_overrides(None, device))
    _check_outputs(cfg, config, {"--plot": plot})
    table = _read_data(cfg)
    from backprop_cli.config import optimizer_label
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.render.documents import find_lr_document
    from backprop_cli.runs.lrfind import find_lr as sweep

    set_threads(threads, _flops(cfg))
    result = sweep(cfg, start=start, end=end, steps=steps, table=table)
    result["config"] = str(config)
    result["optimizer"] = " ".join(w for w in optimizer_label(cfg.optimizer).split() if not w.startswith("lr="))
    if plot is not None:
        from backprop_cli.render.plots import lr_figure

        lr_figure(plot, result["lrs"], result["losses"], result["smoothed_losses"], result["suggested_lr"],
                  result["min_loss_lr"], title=f"{Path(config).name}: {result['optimizer']}, learning-rate range test")
    _emit(format, find_lr_document(result), lambda con, plain: _render("render_find_lr", con, plain, result, wide=wide))
    if plot is not None:
        typer.echo(f"wrote plot: {plot}", err=True)


# --------------------------------------------------------------------------- init


@app.command(epilog=_examples("backprop init", "backprop init mine.yaml --csv configs/data/houses.csv --target price_k",
                             "backprop init mine.yaml --csv configs/data/houses.csv --target price_k --force"))
@handle_errors
@_reflow
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("backprop.yaml"),
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Fit the config to this CSV: sizes, target column, "
                                                "regression or classification.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="The column to predict "
                                                  "(without it, init lists the columns and exits 2).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config: every key with its default and the values it takes."""
    from backprop_cli.io.outputs import check_outputs
    from backprop_cli.config.starter import starter_config, write_starter

    check_outputs({"PATH": path}, {"--csv": csv})
    text, what = starter_config(path, csv, target)
    write_starter(path, text, force)  # validated before it is written
    typer.echo(f"wrote {path} ({what}); run: backprop train --config {path}")


# --------------------------------------------------------------------------- config


class ShowFormat(str, Enum):
    yaml = "yaml"
    json = "json"


@config_app.command("show", epilog=_examples("backprop config show -c configs/seed.yaml",
                                            "backprop config show -c configs/seed.yaml --set optimizer=adam "
                                            "--format json"))
@handle_errors
@_reflow
def config_show(config: ConfigOpt, set_: SetOpt = None,
                format: Annotated[ShowFormat, typer.Option("--format", help="yaml or json.")] = ShowFormat.yaml) -> None:
    """Print the resolved config (defaults filled in, overrides applied)."""
    from backprop_cli.config import to_yaml

    cfg = _load(config, set_)
    if format == ShowFormat.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(cfg.plain()) + "\n")
    else:
        sys.stdout.write(_derived_width(cfg, to_yaml(cfg)))


def _derived_width(cfg, text: str) -> str:
    """``input_size: auto`` with what it comes to, as a comment: the data is read (no torch) to count."""
    if cfg.model.input_size is not None or getattr(cfg.data, "kind", None) != "csv":
        return text
    from backprop_cli.data.load import read_table
    from backprop_cli.errors import DataError

    try:
        how = read_table(cfg).encoding.summary()
    except DataError as e:
        how = f"not known: {e}"
    return text.replace("  input_size: auto\n", f"  input_size: auto  # derived from the data: {how}\n", 1)


@config_app.command("validate", epilog=_examples("backprop config validate -c configs/seed.yaml",
                                                "backprop config validate -c configs/csv.yaml --format json"))
@handle_errors
@_reflow
def config_validate(config: ConfigOpt, set_: SetOpt = None, format: FormatOpt = Format.table) -> None:
    """Check a config file and its data (readable, the columns there, the derived input width) and the device:
    every problem at once, one per line (exit code 2), or `ok`. Torch is not imported."""
    try:
        cfg = _load(config, set_)
        problems = []
    except ConfigError as e:
        cfg, problems = None, list(e.problems)
    if cfg is not None:
        from backprop_cli.data.load import data_problems

        problems = data_problems(cfg) + ([p] if (p := _device_problem(cfg.device)) else [])
    if format == Format.json:
        from backprop_cli.render.documents import json_text, validate_document

        doc = validate_document(str(config), problems)
        sys.stdout.write(json_text(doc) + "\n")
        if not doc["ok"]:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    if problems:
        _fail(problems, EXIT_BAD_INPUT)
    typer.echo(f"{config}: ok")


def _device_problem(spec: str) -> Optional[str]:
    """Whether the configured device exists, judged without torch: CUDA by the NVIDIA driver's device files,
    MPS by the platform (``auto`` always exists)."""
    import os
    import platform

    if spec.startswith("cuda"):
        index = int(spec.partition(":")[2] or 0)
        gpus = os.path.isdir("/proc/driver/nvidia/gpus") and len(os.listdir("/proc/driver/nvidia/gpus"))
        if not gpus and not os.path.exists(f"/dev/nvidia{index}"):
            return f"device: {spec!r} is not available (no NVIDIA GPU found); use device: cpu or auto"
        if gpus and index >= gpus:
            return f"device: {spec!r} is not available (this machine has {gpus} CUDA device(s))"
    if spec == "mps" and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        return "device: 'mps' is not available (it needs an Apple silicon Mac); use device: cpu or auto"
    return None


def main() -> None:
    from backprop_cli.io.signals import install, leaving

    install()  # again, for callers of this function: SIGINT/SIGTERM end the command with one line
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(EXIT_INTERRUPTED)
    finally:
        leaving()  # the command is over: a signal now would only cut Python's shutdown short (exit -2)


__all__ = ["app", "main", "EXIT_BAD_INPUT"]

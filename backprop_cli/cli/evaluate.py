"""`backprop evaluate`: loss and metrics of a checkpoint on a CSV."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, emit, input_file, load, render_with, single_process
from backprop_cli.cli.options import Format, FormatOpt, SetOpt, ThreadsOpt, TrainedOpt, WideOpt, examples


@command(loads_torch=True, epilog=examples("backprop init p.yaml --csv configs/data/penguins.csv --target species",
                             "backprop train -c p.yaml --epochs 20 --save-best best.pt -q",
                             "backprop evaluate --checkpoint best.pt",
                             "backprop evaluate --checkpoint best.pt --format json"))
def evaluate(
    checkpoint: TrainedOpt,
    data: Annotated[Optional[Path], typer.Option("--data", help="A CSV with the training columns (default: the "
                                                 "validation rows of the checkpoint's own config).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Use this config's data section "
                                                   "(and model, which must be the checkpoint's) instead of the "
                                                   "checkpoint's own; --set alone overrides the checkpoint's "
                                                   "own config.")] = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = None,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Loss and metrics of a trained model on a CSV, with the checkpoint's own scaling and class names.

    Classification: accuracy, per-class precision, recall, F1 and support, and the confusion matrix;
    regression: MAE and R² (in the original units).
    """
    single_process("evaluate")
    cfg = load(config, set_) if config is not None else None
    input_file(data, "--data")
    from backprop_cli.render.documents import evaluate_document
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.prediction import evaluate as work
    from backprop_cli.runs.prediction import load_trained

    set_threads(threads)
    result = work(load_trained(checkpoint, cfg, None if config is not None else set_), data)
    emit(format, evaluate_document(result), lambda con, plain: render_with("render_evaluate", con, plain, result, wide=wide))

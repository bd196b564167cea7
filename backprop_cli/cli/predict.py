"""`backprop predict`: one prediction per input row."""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, input_file, single_process
from backprop_cli.cli.options import ThreadsOpt, TrainedOpt, examples


class PredictFormat(str, Enum):
    csv = "csv"
    json = "json"


@command(epilog=examples("backprop init p.yaml --csv configs/data/penguins.csv --target species",
                             "backprop train -c p.yaml --epochs 20 --save-best best.pt -q",
                             "backprop predict --checkpoint best.pt --data configs/data/penguins_new.csv"))
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
    single_process("predict")
    input_file(data, "--data")
    if out is not None:
        from backprop_cli.io.paths import check_outputs, check_writable

        check_writable(out, (".csv",) if format == PredictFormat.csv else (".json",), "predictions")
        check_outputs({"--out": out}, {"--data": data, "--checkpoint": checkpoint})
    from backprop_cli.render.documents import predictions_text
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.prediction import load_trained
    from backprop_cli.runs.prediction import predict as work

    set_threads(threads)
    header, rows = work(load_trained(checkpoint), data, keep)
    text = predictions_text(header, rows, format.value)
    if out is None:
        sys.stdout.write(text)
        return
    from backprop_cli.io.atomic import write_atomic

    write_atomic(out, lambda f: f.write(text))
    typer.echo(f"wrote {out} ({len(rows)} predictions)", err=True)

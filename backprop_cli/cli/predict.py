"""`backprop predict`: one prediction per input row."""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, input_file, single_process, torch_loaded
from backprop_cli.cli.options import ThreadsOpt, TrainedOpt, examples


class PredictFormat(str, Enum):
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


@command(loads_torch=True, epilog=examples("backprop init p.yaml --csv configs/data/penguins.csv --target species",
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
    format: Annotated[PredictFormat, typer.Option("--format", help="csv; json: {\"columns\", \"predictions\": "
                                                  "[{column: value}, ...]}; or jsonl: one {column: value} object "
                                                  "per line.")] = PredictFormat.csv,
) -> None:
    """One prediction per input row, in input order: the class and its probabilities, or the target values
    in their original units."""
    single_process("predict")
    input_file(data, "--data")
    if out is not None:
        from backprop_cli.io.paths import check_outputs, check_writable

        check_writable(out, (f".{format.value}",), "predictions")
        check_outputs({"--out": out}, {"--data": data, "--checkpoint": checkpoint})
    from backprop_cli.runs.distributed import set_threads
    from backprop_cli.runs.prediction import load_trained, predict_stream

    set_threads(threads)
    try:
        count = _write(predict_stream(load_trained(checkpoint), data, keep), format.value, out)
    except (RuntimeError, MemoryError) as e:
        _out_of_memory(e)
    if out is not None:
        typer.echo(f"wrote {out} ({count} predictions)", err=True)


def _write(stream, fmt: str, out: Optional[Path]) -> int:
    """The predictions written to ``out`` (atomically: a bad row later in the file and nothing is written) or
    stdout; how many."""
    from backprop_cli.render.predictions import predictions_chunks

    header, batches = stream
    count = 0

    def counted():
        nonlocal count
        for rows in batches:
            count += len(rows)
            yield rows

    chunks = predictions_chunks(header, counted(), fmt)  # a batch of rows at a time: memory stays flat
    if out is None:
        _to_stdout(chunks)
        return count
    from backprop_cli.io.atomic import write_atomic

    write_atomic(out, lambda f: f.writelines(chunks))
    torch_loaded()
    return count


SPOOL_BYTES = 8 << 20  # predictions kept in memory before the spool moves to a temporary file


def _to_stdout(chunks) -> None:
    """Every chunk, then all of them on stdout: a bad cell in the last batch is one error line with nothing on
    stdout, as with --out; what waits is in a temporary file past SPOOL_BYTES, so memory stays flat."""
    import shutil
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline="") as spool:
        for chunk in chunks:  # one write each: writelines would fill the memory before rolling over
            spool.write(chunk)
        torch_loaded()
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout, 1 << 20)


def _out_of_memory(e: BaseException) -> None:
    """predict's own line for running out of memory: it holds a batch of rows and the model, so the training
    hint (model.hidden_size, data.samples, batch_size) does not apply."""
    from backprop_cli.errors import ResourceError, known_error

    known = known_error(e)
    if not isinstance(known, ResourceError):
        raise e
    from backprop_cli.runs.prediction import PREDICT_BATCH_ROWS

    raise ResourceError(str(known).split(";")[0] + f"; predict holds the model and {PREDICT_BATCH_ROWS:,} rows at "
                        "a time, whatever the file's length: free memory for them") from None

"""`backprop plot`: the dashboard of a metrics file. No torch."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command
from backprop_cli.cli.options import examples, parse_size
from backprop_cli.errors import shown


@command(epilog=examples("backprop train -c configs/regression.yaml --metrics run.jsonl",
                             "backprop plot run.jsonl --out run.png",
                             "backprop compare-optimizers -c configs/compare.yaml --metrics runs.csv",
                             "backprop plot runs.csv --out runs.svg --size 1800x1000"))
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
    dims = parse_size(size)
    from backprop_cli.io.paths import PLOT_SUFFIXES, check_outputs, check_writable
    from backprop_cli.io.metrics_read import load_metrics
    from backprop_cli.render.plots import dashboard, runs_of

    out = out if out is not None else metrics.with_suffix(".png")
    check_writable(out, PLOT_SUFFIXES, "plot")
    check_outputs({"--out": out}, {"METRICS": metrics})
    got = load_metrics(metrics)
    if got.stopped:
        typer.echo(shown(f"warning: {got.stopped}; plotting the {len(got.records)} record(s) before it"), err=True)
    runs = runs_of(got.records)
    dashboard(out, runs, dims, title=metrics.name)
    what = f"{len(got.records)} records" + (f", {len(runs)} runs" if len(runs) > 1 else "")
    typer.echo(shown(f"wrote {out} ({what})"))

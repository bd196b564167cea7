"""`backprop init`: a commented starter config (config.starter). No torch."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command
from backprop_cli.cli.options import examples


@command(epilog=examples("backprop init", "backprop init mine.yaml --csv configs/data/houses.csv --target price_k",
                             "backprop init mine.yaml --csv configs/data/houses.csv --target price_k --force"))
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("backprop.yaml"),
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Fit the config to this CSV: sizes, target column, "
                                                "regression or classification.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="The column to predict "
                                                  "(without it, init lists the columns and exits 2).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config: every key with its default and the values it takes."""
    from backprop_cli.runs.starter import starter_config, write_starter
    from backprop_cli.io.paths import check_outputs

    check_outputs({"PATH": path}, {"--csv": csv})
    text, what = starter_config(path, csv, target)
    write_starter(path, text, force)  # validated before it is written
    typer.echo(f"wrote {path} ({what}); run: backprop train --config {path}")

"""`backprop config show` and `backprop config validate`. No torch."""

import sys
from enum import Enum
from typing import Annotated

import typer

from backprop_cli.cli.common import command, load
from backprop_cli.cli.options import ConfigOpt, Format, FormatOpt, SetOpt, examples
from backprop_cli.errors import EXIT_BAD_INPUT, ConfigError


class ShowFormat(str, Enum):
    yaml = "yaml"
    json = "json"


@command("show", epilog=examples("backprop config show -c configs/seed.yaml",
                                            "backprop config show -c configs/seed.yaml --set optimizer=adam "
                                            "--format json"))
def config_show(config: ConfigOpt, set_: SetOpt = None,
                format: Annotated[ShowFormat, typer.Option("--format", help="yaml or json.")] = ShowFormat.yaml) -> None:
    """Print the resolved config (defaults filled in, overrides applied)."""
    from backprop_cli.config import to_yaml

    cfg = load(config, set_)
    if format == ShowFormat.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(cfg.plain()) + "\n")
    else:
        sys.stdout.write(to_yaml(cfg))


@command("validate", epilog=examples("backprop config validate -c configs/seed.yaml",
                                                "backprop config validate -c configs/csv.yaml --format json"))
def config_validate(config: ConfigOpt, set_: SetOpt = None, format: FormatOpt = Format.table) -> None:
    """Check a config file: every problem at once, one per line (exit code 2), or `ok`."""
    if format == Format.json:
        from backprop_cli.render.documents import json_text, validate_document

        try:
            load(config, set_)
            doc = validate_document(str(config), [])
        except ConfigError as e:
            doc = validate_document(str(config), e.problems)
        sys.stdout.write(json_text(doc) + "\n")
        if not doc["ok"]:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    load(config, set_)
    typer.echo(f"{config}: ok")

"""``backprop graph``: the autograd graph of one forward and backward.

Nothing here imports torch at import time (``graph --help`` stays fast).
"""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, inputs_of, load, read_data, single_process
from backprop_cli.cli.options import BatchOpt, SetOpt, examples
from backprop_cli.errors import shown

GRAPH_SUFFIXES = (".svg", ".png", ".dot")


class GraphFormat(str, Enum):
    dot = "dot"
    json = "json"

EXAMPLES = ("backprop graph --example", "backprop graph --config configs/seed.yaml --out graph.png",
            "backprop graph -c configs/deep_relu.yaml --saved --out deep.svg",
            "backprop graph -c configs/seed.yaml --out graph.dot")


@command(epilog=examples(*EXAMPLES))
def graph(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file: the graph of its "
                                                   "network (seeded init) on one batch.", show_default=False,
                                                   rich_help_panel="Config")] = None,
    set_: SetOpt = None,
    example: Annotated[bool, typer.Option("--example", help="The graph of explain's two-weight scalar example "
                                          "instead of a config's network.", rich_help_panel="Config")] = False,
    batch: BatchOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the graph to .dot (DOT text), .svg or .png "
                                                "(drawn by Graphviz's dot when it is installed, else by "
                                                "matplotlib). Default: DOT text on stdout.",
                                                rich_help_panel="Output")] = None,
    saved: Annotated[bool, typer.Option("--saved", help="Also show the tensors each operation saves for its "
                                        "backward (its grad_fn's _saved_* attributes).",
                                        rich_help_panel="Output")] = False,
    format: Annotated[GraphFormat, typer.Option("--format", help="What goes to stdout without --out: dot (DOT "
                                                "text), or json: the nodes and edges as one JSON document.",
                                                rich_help_panel="Output")] = "dot",
) -> None:
    """Draw the graph autograd builds for one forward and backward, walked from loss.grad_fn.

    Every operation node (its grad_fn, e.g. AddmmBackward0) and every leaf (a parameter, e.g.
    layer1.weight) with its shape, its data (the values themselves when tiny, else their mean and range)
    and its grad; arrows point the way loss.backward() passes the gradient, from the loss to the leaves.
    """
    from backprop_cli.errors import BackpropError, ConfigError

    if example == (config is not None):
        raise ConfigError("give --config FILE or --example (one of them)")
    if example and set_:
        raise ConfigError("--set needs --config")
    if out is not None:
        from backprop_cli.io.paths import check_writable

        check_writable(out, GRAPH_SUFFIXES, "graph")
    json_ = GraphFormat(format) == GraphFormat.json
    if out is not None and json_:
        raise BackpropError("--format json writes to stdout; leave out --out")
    if example:
        from backprop_cli.runs.graph import scalar_graph

        g = scalar_graph(saved)
    else:
        from backprop_cli.io.paths import check_outputs

        single_process("graph")
        cfg = load(config, set_, ["device=cpu"])
        if out is not None:
            check_outputs({"--out": out}, inputs_of(cfg, config))
        table = read_data(cfg)
        from backprop_cli.runs.graph import config_graph

        g = config_graph(cfg, table, batch or 0, saved)
    from backprop_cli.render.graph import dot_text

    text = dot_text(g, saved)
    if json_:
        import sys

        from backprop_cli.render.documents import json_text
        from backprop_cli.render.learner_documents import graph_document

        sys.stdout.write(json_text(graph_document(g)) + "\n")
        return
    if out is None:
        typer.echo(text, nl=False)
        return
    from backprop_cli.render.graph import write_graph

    how = write_graph(out, g, text, saved)
    typer.echo(shown(f"wrote {out} ({len(g['nodes'])} nodes, {g['depth']} levels; drawn by {how})"), err=True)


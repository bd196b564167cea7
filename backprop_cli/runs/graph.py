"""graph: the autograd graph of the configured net (or explain's example); render/graph.py draws it.
Nothing here prints."""

from __future__ import annotations

from backprop_cli.config import Config
from backprop_cli.core.build import build_run
from backprop_cli.core.graph import example_graph, network_graph
from backprop_cli.data.tables import Table


def config_graph(cfg: Config, table: Table, batch: int = 0, saved: bool = False) -> dict:
    """The graph of one forward and backward of ``cfg``'s net at its seeded init, on batch ``batch``."""
    return network_graph(build_run(cfg, dataset=table, optimizer=False), batch, saved)


def scalar_graph(saved: bool = False) -> dict:
    return example_graph(saved=saved)

"""explain --config: the configured network's chain rule on one batch, beside autograd. Nothing here prints."""

from __future__ import annotations

from backprop_cli.config import Config
from backprop_cli.core.build import build_run
from backprop_cli.core.layerwise import explain_network, plain
from backprop_cli.data.tables import Table


def explain_config(cfg: Config, table: Table, batch: int = 0, sample: int = 0) -> dict:
    """The seeded net of ``cfg`` (its init, on the CPU) on batch ``batch`` of its data order; plain data."""
    run = build_run(cfg, dataset=table, optimizer=False)
    return plain(explain_network(run, batch, sample))

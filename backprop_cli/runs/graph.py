"""graph: the autograd graph of the configured net (or explain's example) and the file it is drawn into.
Nothing here prints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from backprop_cli.config import Config
from backprop_cli.core.build import build_run
from backprop_cli.core.graph import example_graph, network_graph
from backprop_cli.data.readers import Table
from backprop_cli.io.outputs import write_atomic

DOT_TIMEOUT_S = 60


def config_graph(cfg: Config, table: Table, batch: int = 0, saved: bool = False) -> dict:
    """The graph of one forward and backward of ``cfg``'s net at its seeded init, on batch ``batch``."""
    return network_graph(build_run(cfg, dataset=table), batch, saved)


def scalar_graph(saved: bool = False) -> dict:
    return example_graph(saved=saved)


def write_graph(out: Path, g: dict, text: str, saved: bool) -> str:
    """Write ``out`` atomically: ``.dot`` the DOT text; ``.svg``/``.png`` drawn by Graphviz's ``dot`` when it
    is on the PATH (and works), else by matplotlib. Returns what drew it: ``DOT text``, ``dot`` or ``matplotlib``."""
    suffix = out.suffix.lower()
    if suffix == ".dot":
        write_atomic(out, lambda f: f.write(text))
        return "DOT text"
    fmt = suffix[1:]
    dot = shutil.which("dot")
    if dot is not None:
        try:
            r = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True, timeout=DOT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            r = None
        if r is not None and r.returncode == 0 and r.stdout:
            write_atomic(out, lambda f: f.write(r.stdout), "wb")
            return "dot"
    from backprop_cli.render.graph import draw

    write_atomic(out, lambda f: draw(g, f, fmt, saved), "wb")
    return "matplotlib"

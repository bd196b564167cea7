"""``backprop graph``: the autograd graph as DOT text, or as a layered matplotlib drawing. No torch here.

The graph is plain data from :func:`backprop_cli.core.graph.trace`: nodes (op / leaf / loss, with shape,
values and gradient) and edges from a node to the node it passes its gradient to.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import IO

from backprop_cli.io.atomic import write_atomic

COLORS = {"loss": "#f6c28b", "op": "#cfe2f3", "leaf": "#d9ead3"}
EDGE = "#555555"


def node_lines(node: dict, saved: bool = False) -> list[str]:
    """The text of one node: what it is, its shape, ``data`` and ``grad`` (micrograd's two numbers)."""
    shape = "" if node["shape"] is None else " (scalar)" if node["shape"] == [] else \
        " [" + ", ".join(str(n) for n in node["shape"]) + "]"
    if node["kind"] == "leaf":
        lines = [f"{node['name']}{shape}"]
    else:
        lines = [node["op"]]
        if node["label"]:
            lines.append(f"{node['label']}{shape}")
        elif shape:
            lines.append(f"output{shape}")
    if node["value"] is not None:
        lines.append(f"data {node['value']}")
    if node["grad"] is not None:
        lines.append(f"grad {node['grad']}")
    if saved and node.get("saved"):
        for s in node["saved"]:
            what = s["value"] if s["shape"] is None or len(s["value"] or "") < 24 else \
                "[" + ", ".join(str(n) for n in s["shape"]) + "]"
            lines.append(f"saved {s['name']}: {what}")
    return lines


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_text(g: dict, saved: bool = False) -> str:
    """The graph in Graphviz's DOT language (``dot -Tsvg graph.dot -o graph.svg`` draws it)."""
    out = ["digraph backprop {",
           f"  label={_quote(g.get('title', 'autograd graph') + '  (arrows: the way loss.backward() passes gradients)')};",
           '  labelloc="t"; rankdir="TB"; fontname="Helvetica";',
           '  node [shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10"];',
           f'  edge [color="{EDGE}", arrowsize="0.7"];']
    for n in g["nodes"]:
        label = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in node_lines(n, saved))
        out.append(f'  n{n["id"]} [label="{label}", fillcolor="{COLORS[n["kind"]]}"];')
    for a, b in g["edges"]:
        out.append(f"  n{a} -> n{b};")
    out.append("}")
    return "\n".join(out) + "\n"


def _order(g: dict) -> dict[int, list[int]]:
    """Node ids per row (level), each row ordered by the mean position of the nodes that feed it, so
    that edges cross as little as a simple pass can make them."""
    rows: dict[int, list[int]] = {}
    for n in g["nodes"]:
        rows.setdefault(n["level"], []).append(n["id"])
    parents: dict[int, list[int]] = {}
    for a, b in g["edges"]:
        parents.setdefault(b, []).append(a)
    pos: dict[int, float] = {}
    for level in sorted(rows):
        ids = rows[level]
        found = {i: j for j, i in enumerate(ids)}

        def key(i, found=found):
            ps = [pos[p] for p in parents.get(i, []) if p in pos]
            return (sum(ps) / len(ps) if ps else 0.0, found[i])
        ids.sort(key=key)
        for j, i in enumerate(ids):
            pos[i] = j - (len(ids) - 1) / 2
    return rows


BOX_W, BOX_H = 2.5, 0.95  # inches per node cell: wide enough for "mean -0.0123, [-0.456, 0.789]" at 8 pt


def draw(g: dict, stream: IO, fmt: str, saved: bool = False) -> None:
    """A layered drawing (loss at the top, leaves below) with matplotlib, as PNG or SVG, into ``stream``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    rows = _order(g)
    by_id = {n["id"]: n for n in g["nodes"]}
    widest = max(len(ids) for ids in rows.values())
    lines_max = max(len(node_lines(n, saved)) for n in g["nodes"])
    cell_h = BOX_H + 0.14 * max(0, lines_max - 4)
    width = max(6.0, widest * BOX_W + 0.6)
    height = max(2.5, len(rows) * cell_h + 1.0)
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    xy = {}
    for level, ids in rows.items():
        y = height - 0.85 - (level + 0.5) * cell_h
        for j, i in enumerate(ids):
            x = width / 2 + (j - (len(ids) - 1) / 2) * BOX_W
            xy[i] = (x, y)
    box_w, box_h = BOX_W - 0.25, cell_h - 0.3
    for a, b in g["edges"]:
        (xa, ya), (xb, yb) = xy[a], xy[b]
        ax.annotate("", xy=(xb, yb + box_h / 2), xytext=(xa, ya - box_h / 2),
                    arrowprops=dict(arrowstyle="-|>", color=EDGE, lw=0.8, shrinkA=0, shrinkB=0))
    for i, (x, y) in xy.items():
        n = by_id[i]
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.08", fc=COLORS[n["kind"]],
                                    ec="#444444", lw=0.8))
        lines = node_lines(n, saved)
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=7.5, family="DejaVu Sans",
                linespacing=1.15, weight="normal")
    import textwrap

    legend = ("arrows: the way loss.backward() passes gradients; blue: operations (grad_fn), green: parameters, "
              "orange: the loss")
    chars = int(width * 13)
    title = "\n".join(textwrap.wrap(g.get("title", "autograd graph"), chars))
    ax.text(width / 2, height - 0.18, title, ha="center", va="top", fontsize=8.5, weight="bold")
    ax.text(width / 2, height - 0.18 - 0.17 * (title.count("\n") + 1), "\n".join(textwrap.wrap(legend, chars + 10)),
            ha="center", va="top", fontsize=7.5)
    fig.savefig(stream, format=fmt)
    plt.close(fig)


DOT_TIMEOUT_S = 60


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
    write_atomic(out, lambda f: draw(g, f, fmt, saved), "wb")
    return "matplotlib"

"""The Markdown table every benchmark prints (the README's tables are pasted from it)."""

from __future__ import annotations

from typing import Sequence


def markdown(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``head`` and ``rows`` as a Markdown table, each column padded to its widest cell."""
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])

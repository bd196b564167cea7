"""Regenerate the pictures of real output that the docs pages show: python docs/make_screenshots.py

Each command runs for real, in-process, with its terminal output recorded by rich
(Console(record=True)) 100 columns wide, as on an ordinary terminal, and saved as SVG under
docs/img/; the compare plot is docs/compare.png, the find-lr plot docs/img/find-lr.png and the
dashboard of a run docs/img/dashboard.png (FIGURES: only their files are kept).
Run it from anywhere; it works in the repository root.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100  # columns: what the docs' pictures show
sys.path.insert(0, str(ROOT))

SHOTS = [
    ("train", ["train", "--config", "configs/seed.yaml"]),
    ("train-regression", ["train", "--config", "configs/regression.yaml", "--steps", "200", "--log-every", "20"]),
    ("inspect-grads", ["inspect-grads", "--config", "configs/seed.yaml"]),
    ("check-grads", ["check-grads", "--config", "configs/seed.yaml"]),
    ("explain", ["explain"]),
    ("compare-optimizers", ["compare-optimizers", "--config", "configs/compare.yaml", "--plot", "docs/compare.png"]),
    ("find-lr", ["find-lr", "--config", "configs/regression.yaml", "--plot", "docs/img/find-lr.png"]),
]
FIGURES = [
    ["train", "--config", "configs/deep_relu.yaml", "--quiet", "--plot", "docs/img/dashboard.png"],
]


def main() -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from backprop_cli.render import compare, console as render_console, train
    from backprop_cli.cli.app import app

    os.chdir(ROOT)
    (ROOT / "docs" / "img").mkdir(exist_ok=True)
    train.TrainReport.show_progress = False
    compare.CompareProgress.show_progress = False
    for name, args in SHOTS:
        console = Console(record=True, width=WIDTH, force_terminal=True, color_system="truecolor",
                          file=io.StringIO(), highlight=False)
        render_console.make_console = lambda stream=None, _c=console: _c
        render_console.plain_output = lambda stream=None: False
        result = CliRunner().invoke(app, args)
        if result.exit_code != 0:
            raise SystemExit(f"backprop {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
        out = ROOT / "docs" / "img" / f"{name}.svg"
        console.save_svg(str(out), title="backprop " + " ".join(args))
        print(f"wrote {out.relative_to(ROOT)}")
    for args in FIGURES:
        result = CliRunner().invoke(app, args)
        if result.exit_code != 0:
            raise SystemExit(f"backprop {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
        print(f"wrote {args[-1]}")


if __name__ == "__main__":
    main()

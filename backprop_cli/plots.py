"""Plot files (matplotlib, headless Agg backend), written atomically."""

from __future__ import annotations

from pathlib import Path

from backprop_cli.outputs import AtomicFile, check_writable

PLOT_SUFFIXES = (".png", ".svg")
DPI = 100


def compare_figure(path: Path, series: list[dict], size: tuple[int, int] = (1200, 500), title: str = "") -> None:
    """Two panels: loss per step (log y) and total grad norm per step, one line per optimizer.

    ``series``: ``[{"label", "steps", "loss_mean", "loss_std", "grad_mean", "grad_std"}]``; the std
    lists are None for a single seed, else drawn as ± std bands. ``size`` is in pixels.
    """
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    try:
        for s in series:
            for ax, mean, std in ((ax_loss, s["loss_mean"], s["loss_std"]), (ax_grad, s["grad_mean"], s["grad_std"])):
                (line,) = ax.plot(s["steps"], mean, label=s["label"], linewidth=1.5)
                if std is not None:
                    lo = [max(m - d, 1e-12) for m, d in zip(mean, std)]
                    hi = [m + d for m, d in zip(mean, std)]
                    ax.fill_between(s["steps"], lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax_loss.set_yscale("log")
        ax_loss.set(xlabel="step", ylabel="loss (log scale)", title="loss")
        ax_grad.set_yscale("log")
        ax_grad.set(xlabel="step", ylabel="total gradient L2 norm (log scale)", title="gradient norm")
        for ax in (ax_loss, ax_grad):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fmt = path.suffix.lower().lstrip(".")
        with AtomicFile(path, "wb") as f:
            fig.savefig(f.file, format=fmt, dpi=DPI)
    finally:
        plt.close(fig)

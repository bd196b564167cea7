"""Plot files (matplotlib, headless Agg backend), written atomically. They draw plain data; no torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from backprop_cli.health import layer_norms
from backprop_cli.outputs import PLOT_SUFFIXES, AtomicFile, check_writable  # noqa: F401 - PLOT_SUFFIXES re-exported
DPI = 100


def compare_figure(path: Path, series: list[dict], size: tuple[int, int] = (1200, 500), title: str = "") -> None:
    """Two panels: loss per step (log y) and total grad norm per step, one line per optimizer.

    ``series``: ``[{"label", "steps", "loss_mean", "loss_std", "grad_mean", "grad_std"}]``; the std
    lists are None for a single seed, else drawn as ± std bands. ``size`` is in pixels.
    """
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
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
        _save(fig, path)
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with AtomicFile(path, "wb") as f:
        fig.savefig(f.file, format=path.suffix.lower().lstrip("."), dpi=DPI)


# --------------------------------------------------------------------------- the dashboard of a run

DASHBOARD_SIZE = (1500, 850)
HEALTHY_UPDATE = 1e-3  # the update-to-data ratio guide line


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None else math.nan


def _log10(v) -> float:
    v = _num(v)
    return math.log10(v) if v > 0 else math.nan


def _series(records: list[dict], value) -> dict[str, tuple[list[int], list[float]]]:
    """``value(record) -> {name: number}`` over the records, as one (steps, values) series per name."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for name, v in (value(rec) or {}).items():
            steps, values = out.setdefault(name, ([], []))
            steps.append(rec["step"])
            values.append(v)
    return out


def _natural(name: str) -> tuple:
    """layer2 before layer10."""
    head, _, tail = name.partition(".")
    digits = "".join(c for c in head if c.isdigit())
    return (head.rstrip("0123456789"), int(digits) if digits else 0, tail)


def runs_of(records: list[dict]) -> dict[str, list[dict]]:
    """A metrics file's records by run: compare-optimizers' carry ``optimizer`` (and ``seed``) fields;
    train's are one run (label "")."""
    seeds = {r.get("seed") for r in records if "optimizer" in r}
    runs: dict[str, list[dict]] = {}
    for r in records:
        label = str(r.get("optimizer", ""))
        if len(seeds) > 1 and "seed" in r:
            label += f" seed {r['seed']}"
        runs.setdefault(label, []).append(r)
    return runs


def dashboard(path: Path, runs: dict[str, list[dict]], size: tuple[int, int] = DASHBOARD_SIZE,
              title: str = "") -> None:
    """One figure of a run (or several: compare-optimizers' runs) from its metrics records.

    Six panels: the loss (and ``val_loss`` where recorded; log scale); the gradient norm of each layer
    (log); the update-to-data ratio ‖Δw‖/‖w‖ of each parameter (log10, with the 1e-3 guide line; the
    overall ratio where only that was recorded); the learning rate; the dead or saturated fraction of each
    hidden layer; the std of each hidden layer's activations. ``runs``: label → records (label "" for a
    single run); a panel with nothing recorded says so.
    """
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    (ax_loss, ax_grad, ax_update), (ax_lr, ax_units, ax_act) = axes
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("viridis")
    try:
        drawn = {ax: False for ax in axes.flat}

        def draw(ax, series: dict, style: str, prefix: str, marker: Optional[str] = None, colors: bool = True):
            names = sorted(series, key=_natural)
            for k, name in enumerate(names):
                steps, values = series[name]
                color = cmap(k / max(1, len(names) - 1) * 0.9) if colors and len(names) > 1 else None
                label = " ".join(x for x in (prefix, name) if x)
                ax.plot(steps, values, linestyle=style, marker=marker, markersize=3 if marker else None,
                        linewidth=1.3, color=color, label=label or None)
                drawn[ax] = True

        for i, (label, records) in enumerate(runs.items()):
            style = styles[i % len(styles)]
            losses = _series(records, lambda r: {"loss": _num(r.get("loss"))} if "loss" in r else None)
            val = _series(records, lambda r: {"val_loss": _num(r["val_loss"])} if "val_loss" in r else None)
            draw(ax_loss, losses, style, label, colors=False)
            if val:
                draw(ax_loss, val, style, label, marker="o", colors=False)
            draw(ax_grad, _series(records, lambda r: layer_norms(r.get("grad_norms") or {})), style, label)
            per_param = _series(records, lambda r: {n: _log10(v) for n, v in (r.get("update_ratios") or {}).items()})
            if per_param:
                draw(ax_update, per_param, style, label, marker=".")
            else:
                draw(ax_update, _series(records, lambda r: {"all parameters": _log10(r["update_ratio"])}
                                        if "update_ratio" in r else None), style, label, colors=False)
            draw(ax_lr, _series(records, lambda r: {"lr": _num(r.get("lr"))} if "lr" in r else None), style, label,
                 colors=False)
            draw(ax_units, _series(records, lambda r: {layer: _num(s.get("dead_fraction", s.get("saturated_fraction")))
                                                       for layer, s in (r.get("activations") or {}).items()
                                                       if "dead_fraction" in s or "saturated_fraction" in s}),
                 style, label, marker=".")
            draw(ax_act, _series(records, lambda r: {layer: _num(s.get("std"))
                                                     for layer, s in (r.get("activations") or {}).items()}),
                 style, label, marker=".")

        saturated = any("saturated_fraction" in s for recs in runs.values() for r in recs
                        for s in (r.get("activations") or {}).values())
        panels = [
            (ax_loss, "loss" + (" and val_loss (dots)" if any("val_loss" in r for rs in runs.values() for r in rs)
                                else ""), "loss (log scale)", True, "no loss in this file"),
            (ax_grad, "gradient norm per layer", "‖grad‖ of the layer (log scale)", True, "no gradient norms"),
            (ax_update, "update-to-data ratio ‖Δw‖/‖w‖", "log10 ratio", False,
             "no update ratios (train records them on logging steps)"),
            (ax_lr, "learning rate", "lr", None, "no learning rate"),
            (ax_units, "saturated units per layer" if saturated else "dead units per layer", "fraction of units",
             False, "no dead or saturated fractions (ReLU, GELU, tanh and sigmoid nets record them)"),
            (ax_act, "activation std per layer", "std of the layer's outputs", False,
             "no activation statistics (train records them on logging steps)"),
        ]
        for ax, name, ylabel, log, empty in panels:
            ax.set_title(name)
            if not drawn[ax]:
                ax.text(0.5, 0.5, empty, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9,
                        color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.set(xlabel="step", ylabel=ylabel)
            if log is None:  # the learning rate: log scale when it spans more than 100×
                lo, hi = ax.dataLim.y0, ax.dataLim.y1
                log = lo > 0 and hi / lo > 100
            if log:
                ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        if drawn[ax_update]:
            ax_update.axhline(math.log10(HEALTHY_UPDATE), color="red", linestyle="--", linewidth=1, label="1e-3")
        if drawn[ax_units]:
            ax_units.set_ylim(-0.03, 1.03)
            ax_units.axhline(0.5, color="red", linestyle="--", linewidth=1, label="warning above 0.5")
        for ax in axes.flat:
            handles, labels = ax.get_legend_handles_labels()
            if labels:
                ax.legend(fontsize=7, ncol=2 if len(labels) > 6 else 1, loc="best")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def lr_figure(path: Path, lrs: list[float], losses: list[float], smoothed: list[float],
              suggested: Optional[float], min_loss: Optional[float], size: tuple[int, int] = (900, 550),
              title: str = "") -> None:
    """find-lr: the loss (raw and smoothed) against the learning rate (log x), the suggestions marked."""
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    try:
        ax.plot(lrs, [_num(v) for v in losses], color="lightgray", linewidth=1, label="loss")
        ax.plot(lrs, [_num(v) for v in smoothed], linewidth=1.8, label="smoothed loss")
        for lr, label, color in ((suggested, "steepest descent", "red"), (min_loss, "minimum / 10", "green")):
            if lr is not None:
                ax.axvline(lr, color=color, linestyle="--", linewidth=1, label=f"{label}: {lr:.2g}")
        ax.set_xscale("log")
        finite = [v for v in smoothed if v is not None and math.isfinite(v)]
        if finite and min(finite) > 0:
            ax.set_yscale("log")
            raw = [v for v in map(_num, losses) if math.isfinite(v) and v > 0] or finite
            top = max(finite[0], 4 * min(finite)) * 1.5  # the blow-up at the end would squash the rest
            ax.set_ylim(min(min(raw), min(finite)) / 1.2, top)
        ax.set(xlabel="learning rate (log scale)", ylabel="loss", title=title or "learning-rate range test")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)

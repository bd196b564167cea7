"""Plot files (matplotlib, headless Agg backend), written atomically. They draw plain data; no torch."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Optional

from backprop_cli.core.health import UPDATE_HEALTHY, layer_norms
from backprop_cli.errors import BackpropError, OutputError, shown
from backprop_cli.io.paths import PLOT_SUFFIXES, check_writable
from backprop_cli.io.atomic import AtomicFile  # noqa: F401 - PLOT_SUFFIXES re-exported

DPI = 100


def one_output(draw):
    """A figure that cannot be drawn costs only itself: whatever matplotlib raises on the data becomes an
    OutputError (one line, exit 2) naming the file (the argument ``path``), and nothing is written
    (AtomicFile). A command with other outputs writes them first and exits 2 after (train's sinks;
    compare-optimizers, find-lr, tune)."""
    import inspect

    signature = inspect.signature(draw)

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import warnings

        path = signature.bind(*args, **kwargs).arguments["path"]  # the figure's file, wherever the argument is
        try:
            with warnings.catch_warnings():  # matplotlib's notes on the data (a glyph the font lacks, no positive
                warnings.simplefilter("ignore", UserWarning)  # value for a log axis) are not the user's lines
                return draw(*args, **kwargs)
        except (BackpropError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the figure's data made matplotlib fail: this output only
            raise figure_failed(path, e) from None

    return wrapper


def figure_failed(path, e: BaseException) -> OutputError:
    """The one line of a figure that could not be drawn: the file and what matplotlib said, on one line."""
    why = drawable(" ".join(str(e).split()))[:200] or type(e).__name__
    return OutputError(f"{path}: the figure could not be drawn ({type(e).__name__}: {why})")


def drawable(text: str) -> str:
    """A text as a font can draw it: control characters and lone surrogates (a name decoded with
    ``surrogateescape`` or read from JSON's ``\\ud800``) shown as their escapes (errors.shown), as the
    terminal shows them, instead of failing the whole figure or drawing a missing glyph; line breaks stay."""
    return shown(text, keep="\n")


def plain_text(fig) -> None:
    """Every text of the figure is data, never markup: titles, axis labels, legends and notes hold file
    names, series and run labels (``budget_$5k_$10k.yaml``, a series named ``$\\nope$``), so none is read
    as mathtext or TeX (``parse_math=False``, ``usetex=False``) and each is made drawable. Only the tick
    labels and offsets that matplotlib formats from numbers keep their mathtext (``10^{-3}``). Called
    before anything measures a text (the layout) and again before saving."""
    from matplotlib.text import Text

    numbers = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            numbers.add(id(axis.offsetText))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():  # the ticks findobj will find
                numbers.update((id(tick.label1), id(tick.label2)))
    for text in fig.findobj(Text):
        if id(text) in numbers:
            continue
        text.set_usetex(False)
        text.set_parse_math(False)
        text.set_text(drawable(text.get_text()))


@one_output
def compare_figure(path: Path, series: list[dict], size: tuple[int, int] = (1200, 500), title: str = "") -> None:
    """Two panels: loss per step (log y) and total grad norm per step, one line per optimizer; with
    validation data a third: val_loss at each evaluation (log y).

    ``series``: ``[{"label", "steps", "loss_mean", "loss_std", "grad_mean", "grad_std", "ends"}]``
    (:func:`backprop_cli.runs.compare.curves`); the std lists are None for a single seed, else drawn as
    ± std bands, clipped to the range of the curves (a band wider than its mean would otherwise
    stretch the log axis down to nothing). A run that diverged ends with an ``x`` at its last finite
    step, and its legend entry says where it diverged. ``size`` is in pixels.
    """
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
    validation = any(s.get("val_steps") for s in series)  # a third panel: val_loss at each evaluation
    fig, axes = plt.subplots(1, 3 if validation else 2, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    ax_loss, ax_grad = axes[0], axes[1]
    try:
        for ax, mean_key, std_key, end_key in ((ax_loss, "loss_mean", "loss_std", "loss"),
                                               (ax_grad, "grad_mean", "grad_std", "grad_norm")):
            shown = [v for s in series for v in s[mean_key] if math.isfinite(v) and v > 0]
            floor, ceiling = (min(shown), max(shown)) if shown else (1e-12, math.inf)
            for s in series:
                ends = s.get("ends") or []
                label = s["label"] + (f" (diverged at step {', '.join(str(e['diverged_at']) for e in ends)})"
                                      if ends else "")
                (line,) = ax.plot(s["steps"], _nums(s[mean_key]), label=label, linewidth=1.5)
                std = s[std_key]
                if std is not None:
                    lo = [min(max(m - d, floor), m) for m, d in zip(s[mean_key], std)]
                    hi = [max(min(m + d, ceiling), m) for m, d in zip(s[mean_key], std)]
                    ax.fill_between(s["steps"], _nums(lo), _nums(hi), color=line.get_color(), alpha=0.2, linewidth=0)
                marks = [(e["step"], e[end_key]) for e in ends if e["step"] and math.isfinite(e[end_key])]
                if marks:
                    ax.plot([m[0] for m in marks], _nums(m[1] for m in marks), linestyle="none", marker="x",
                            markersize=9, markeredgewidth=2, color=line.get_color())
        ax_loss.set_yscale("log")
        ax_loss.set(xlabel="step", ylabel="loss (log scale)", title="loss")
        ax_grad.set_yscale("log")
        ax_grad.set(xlabel="step", ylabel="total gradient L2 norm (log scale)", title="gradient norm")
        if validation:
            _validation_panel(axes[2], series)
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        plain_text(fig)  # before the layout measures any text
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _validation_panel(ax, series: list[dict]) -> None:
    """compare-optimizers with validation data: each optimizer's val_loss at its evaluations (log y), ± std
    bands over the seeds, a marker per evaluation."""
    for s in series:
        if not s.get("val_steps"):
            continue
        (line,) = ax.plot(s["val_steps"], s["val_loss_mean"], marker="o", markersize=3, linewidth=1.5,
                          label=s["label"])
        if s.get("val_loss_std") is not None:
            lo = [max(m - d, m / 10) for m, d in zip(s["val_loss_mean"], s["val_loss_std"])]
            hi = [m + d for m, d in zip(s["val_loss_mean"], s["val_loss_std"])]
            ax.fill_between(s["val_steps"], lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="val_loss (log scale)", title="validation loss")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plain_text(fig)  # again: a text added since is data too
    with AtomicFile(path, "wb") as f:
        fig.savefig(f.file, format=path.suffix.lower().lstrip("."), dpi=DPI)


# --------------------------------------------------------------------------- the dashboard of a run

DASHBOARD_SIZE = (1500, 850)
LEGEND_MAX = 24  # entries of a panel's legend: the first 23, then "… and N more"
HEALTHY_UPDATE = UPDATE_HEALTHY  # the update-to-data ratio guide line (core.health's advice names it)


DRAWN_MAX = 1e300  # larger magnitudes are drawn as gaps: matplotlib's axis limits and ticks overflow near 1e307


def _number(v) -> float:
    """A record's value as a float (NaN where it is not a number); as written, for a text."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond float
        return math.nan


def _num(v) -> float:
    """A value as drawn: a number within ±DRAWN_MAX, else a gap (NaN) in its line. Every value a figure
    draws passes here (an lr of 1.7e308 is data a file may hold; matplotlib cannot lay out its axis)."""
    v = _number(v)
    return v if abs(v) <= DRAWN_MAX else math.nan


def _nums(values) -> list[float]:
    return [_num(v) for v in values]


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
    stem = head.rstrip("0123456789")  # ASCII digits only: '¹'.isdigit() is true and int('¹') fails
    digits = head[len(stem):]
    return (stem, len(digits.lstrip("0")), digits, tail)  # numbers by their length, then their digits


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


@one_output
def dashboard(path: Path, runs: dict[str, list[dict]], size: tuple[int, int] = DASHBOARD_SIZE,
              title: str = "") -> None:
    """One figure of a run (or several: compare-optimizers' runs) from its metrics records.

    Six panels: the loss (and ``val_loss`` where recorded; log scale); the gradient norm of each layer
    (log; a norm layer's γ and β dashed, in its linear layer's colour); the update-to-data ratio ‖Δw‖/‖w‖ of each parameter (log10, with the 1e-3 guide line; the
    overall ratio where only that was recorded); the learning rate; the dead or saturated fraction of each
    hidden layer; the std of each hidden layer's outputs. A learning rate that never changes (or none
    recorded) is a line of text under the panels instead of a panel of its own. ``runs``: label → records
    (label "" for a single run). One run: a colour per layer or parameter. Several: a colour per run (the
    legend under the title) and a line style per layer. A panel with nothing recorded says so. The text
    is sized for ``size``, and titles and tick labels are made to fit it (:func:`_fit`).
    """
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
    with plt.rc_context(_fonts(size)):
        fig = dashboard_figure(runs, size, title)
        try:
            _save(fig, path)
        finally:
            plt.close(fig)


def _fonts(size: tuple[int, int]) -> dict:
    """Text sized for the figure: matplotlib's 10 pt at the default 1500x850, smaller on a smaller figure
    (7 pt at 900x500), at most 13 pt on a large one."""
    scale = min(size[0] / DASHBOARD_SIZE[0], size[1] / DASHBOARD_SIZE[1])
    base = max(6.5, min(13.0, 10.0 * scale ** 0.6))
    return {"font.size": base, "axes.titlesize": base * 1.15, "axes.labelsize": base, "xtick.labelsize": base * 0.9,
            "ytick.labelsize": base * 0.9, "legend.fontsize": base * 0.75, "figure.titlesize": base * 1.25}


def _lr_line(runs: dict[str, list[dict]]) -> Optional[str]:
    """The learning rate in words where it never changes (or was not recorded); None where it varies."""
    lrs = {_number(r["lr"]) for rs in runs.values() for r in rs if "lr" in r}
    if not lrs:
        return "learning rate: not recorded"
    if len(lrs) == 1:
        (lr,) = lrs
        return f"learning rate {lr:g} at every step" + (" of every run" if len(runs) > 1 else "")
    return None


def dashboard_figure(runs: dict[str, list[dict]], size: tuple[int, int] = DASHBOARD_SIZE, title: str = ""):
    """The dashboard's matplotlib figure (:func:`dashboard` saves it); the caller closes it."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    lr_text = _lr_line(runs)
    fig = plt.figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    grid = fig.add_gridspec(2, 6)
    ax_loss, ax_grad, ax_update = (fig.add_subplot(grid[0, 2 * k:2 * k + 2]) for k in range(3))
    if lr_text is None:
        ax_lr, ax_units, ax_act = (fig.add_subplot(grid[1, 2 * k:2 * k + 2]) for k in range(3))
        every_ax = [ax_loss, ax_grad, ax_update, ax_lr, ax_units, ax_act]
    else:  # five panels: the learning rate is a line of text
        ax_lr = None
        ax_units, ax_act = fig.add_subplot(grid[1, 0:3]), fig.add_subplot(grid[1, 3:6])
        every_ax = [ax_loss, ax_grad, ax_update, ax_units, ax_act]
    multi = len(runs) > 1
    styles = ["-", "--", ":", "-."]
    viridis, tab10 = plt.get_cmap("viridis"), plt.get_cmap("tab10")
    run_color = {label: tab10(i % 10) for i, label in enumerate(runs)}
    try:
        names: dict = {ax: {} for ax in every_ax}  # each panel's series (name → its index), in order: linear

        def draw(ax, series: dict, run: str, marker: Optional[str] = None, label: Optional[str] = None):
            if ax is None:
                return
            keys = {n: _natural(n) for n in series}
            ordered = sorted(series, key=keys.__getitem__)
            norms = any(n.startswith("norm") for n in ordered)
            groups = {g: i for i, g in enumerate(sorted({keys[n][1] for n in ordered}))} if norms else {}
            for k, name in enumerate(ordered):
                steps, values = series[name]
                k = names[ax].setdefault(name, len(names[ax]))
                if multi:
                    color, style, text = run_color[run], styles[k % len(styles)] if label is None else "-", None
                else:  # a norm layer's series: dashed, in the colour of its linear layer (norm3 beside layer3)
                    at = groups[keys[name][1]] if norms else k
                    color = (viridis(at / max(1, (len(groups) if norms else len(ordered)) - 1) * 0.9)
                             if label is None and len(ordered) > 1 else None)
                    style, text = "--" if name.startswith("norm") else "-", label if label is not None else name
                ax.plot(steps, _nums(values), linestyle=style, marker=marker, markersize=3 if marker else None,
                        linewidth=1.3, color=color, label=text)

        def one(key):
            return lambda r: {key: _num(r[key])} if key in r else None

        for run, records in runs.items():
            draw(ax_loss, _series(records, one("loss")), run, label="loss")
            if any("val_loss" in r for r in records):
                draw(ax_loss, _series(records, one("val_loss")), run, marker="o", label="val_loss")
            draw(ax_grad, _series(records, lambda r: layer_norms({k: _num(v) for k, v in (r.get("grad_norms") or {}).items()})),
                 run)
            per_param = _series(records, lambda r: {n: _log10(v) for n, v in (r.get("update_ratios") or {}).items()})
            if per_param:
                draw(ax_update, per_param, run, marker=".")
            else:
                draw(ax_update, _series(records, lambda r: {"all parameters": _log10(r["update_ratio"])}
                                        if "update_ratio" in r else None), run, label="all parameters")
            draw(ax_lr, _series(records, one("lr")), run, label="lr")
            draw(ax_units, _series(records, lambda r: {layer: _num(s.get("dead_fraction", s.get("saturated_fraction")))
                                                       for layer, s in (r.get("activations") or {}).items()
                                                       if "dead_fraction" in s or "saturated_fraction" in s}),
                 run, marker=".")
            draw(ax_act, _series(records, lambda r: {layer: _num(s.get("std"))
                                                     for layer, s in (r.get("activations") or {}).items()}),
                 run, marker=".")

        every = [r for rs in runs.values() for r in rs]
        saturated = any("saturated_fraction" in s for r in every for s in (r.get("activations") or {}).values())
        panels = [
            (ax_loss, "loss", "loss (log scale)", True, "no loss in this file"),
            (ax_grad, "gradient norm per layer", "‖grad‖ of the layer (log scale)", True, "no gradient norms"),
            (ax_update, "update-to-data ratio ‖Δw‖/‖w‖", "log10 ratio", False,
             "no update ratios\n(train records them on logging steps)"),
            (ax_lr, "learning rate", "lr", None, "no learning rate"),
            (ax_units, "saturated units per layer" if saturated else "dead units per layer", "fraction of units",
             False, "no dead or saturated fractions\n(train records them for ReLU,\nGELU, tanh and sigmoid nets)"),
            (ax_act, "activation std per layer", "std of the layer's outputs", False,
             "no activation statistics\n(train records them on logging steps)"),
        ]
        for ax, name, ylabel, log, empty in panels:
            if ax is None:
                continue
            ax.set_title(name)
            if not ax.lines:
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.set(xlabel="step", ylabel=ylabel)
            if log is None:  # the learning rate: log scale when it spans more than 100×
                lo, hi = ax.dataLim.y0, ax.dataLim.y1
                log = math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi / lo > 100
            if log:
                ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        if ax_update.lines:
            ax_update.axhline(math.log10(HEALTHY_UPDATE), color="red", linestyle="--", linewidth=1,
                              label=f"{HEALTHY_UPDATE:g}")
        if ax_units.lines:
            ax_units.set_ylim(-0.03, 1.03)
            ax_units.axhline(0.5, color="red", linestyle="--", linewidth=1, label="warning above 0.5")
        for ax in every_ax:
            handles, labels = ax.get_legend_handles_labels()
            if multi and names[ax] and len(names[ax]) > 1:  # the line style of each layer or parameter
                handles += [Line2D([], [], color="black", linestyle=styles[k % len(styles)], linewidth=1.3)
                            for k in range(len(names[ax]))]
                labels += list(names[ax])
            if len(labels) > LEGEND_MAX:  # a legend of hundreds of entries is unreadable (and slow to lay out)
                more = len(labels) - LEGEND_MAX + 1
                handles = handles[:LEGEND_MAX - 1] + [Line2D([], [], linestyle="none")]
                labels = labels[:LEGEND_MAX - 1] + [f"… and {more:,} more"]
            if labels and (len(labels) > 1 or multi or ax is ax_update or ax is ax_units):
                ax.legend(handles, labels, ncol=2 if len(labels) > 6 else 1, loc="best")
        top, bottom = 1.0, 0.0
        if multi:
            fig.legend([Line2D([], [], color=run_color[run], linewidth=2) for run in runs], list(runs),
                       loc="upper center", ncol=min(len(runs), 4), frameon=False,
                       bbox_to_anchor=(0.5, 0.965 if title else 1.0))
            top = 0.92 if title else 0.94
        if title:
            fig.suptitle(title)
        if lr_text is not None:
            line = fig.text(0.5, 0.01, lr_text, ha="center", va="bottom", color="dimgray")
        plain_text(fig)  # before the layout measures any text
        if lr_text is not None:
            bottom = _height(fig, line) + 0.02
        _fit(fig, every_ax, (0, bottom, 1, top))
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _height(fig, text) -> float:
    """A text's height as a share of the figure's."""
    box = text.get_window_extent(fig.canvas.get_renderer())
    return box.height / fig.bbox.height


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _fit(fig, axes: list, rect: tuple) -> None:
    """Lay the panels out in ``rect`` (tight_layout), then make what does not fit smaller until it does: a
    title wider than the figure or running into another, tick labels of one axis that overlap (fewer
    ticks on a linear axis, then smaller labels). At most a few rounds; each a new layout."""
    from matplotlib.ticker import MaxNLocator

    for _ in range(8):
        fig.tight_layout(rect=rect)
        renderer = fig.canvas.get_renderer()
        changed = False
        titles = [(ax, ax.title.get_window_extent(renderer)) for ax in axes if ax.get_title()]
        for ax, box in titles:
            clipped = box.x0 < 0 or box.x1 > fig.bbox.width
            crowded = any(other is not ax and _overlap(box, b) for other, b in titles)
            if clipped or crowded:
                ax.title.set_fontsize(ax.title.get_fontsize() * 0.9)
                changed = True
        for ax in axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                boxes = [t.get_window_extent(renderer) for t in labels]
                if any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
                    if axis.get_scale() == "linear" and len(labels) > 3:
                        axis.set_major_locator(MaxNLocator(nbins=max(2, len(labels) // 2)))
                    else:
                        for t in labels:
                            t.set_fontsize(t.get_fontsize() * 0.85)
                    changed = True
        if not changed:
            return
    fig.tight_layout(rect=rect)


@one_output
def lr_figure(path: Path, lrs: list[float], losses: list[float], smoothed: list[float],
              suggested: Optional[float], min_loss: Optional[float], size: tuple[int, int] = (900, 550),
              title: str = "") -> None:
    """find-lr: the loss (raw and smoothed) against the learning rate (log x), the suggestions marked."""
    path = check_writable(Path(path), PLOT_SUFFIXES, "plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    try:
        lrs = _nums(lrs)
        ax.plot(lrs, _nums(losses), color="lightgray", linewidth=1, label="loss")
        ax.plot(lrs, _nums(smoothed), linewidth=1.8, label="smoothed loss")
        for lr, label, color in ((suggested, "valley (suggestion)", "red"), (min_loss, "minimum / 10", "green")):
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
        plain_text(fig)  # before the layout measures any text
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)

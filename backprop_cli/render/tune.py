"""`backprop tune`'s output: the live table of trials, the best trial, its JSON document and its plot.

It formats plain rows (``runs.tune.trial_row``); it imports no torch, and Optuna only to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.text import Text

from backprop_cli.render.documents import finite
from backprop_cli.render.plots import one_output, plain_text
from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, fit, kv_lines, print_blocks, print_lines

TRIAL_KEYS = ("number", "state", "value", "params", "duration_s")


def value_cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return fmt(v)
    return "null" if v is None else str(v)


def state_cell(row: dict) -> str:
    if row["state"] == "pruned" and row.get("why"):
        return f"pruned at {row['why']}"
    if row["state"] == "failed" and row.get("why"):
        return f"failed: {row['why']}"
    return row["state"]


class TuneReport:
    """The first lines (where the study lives, what is searched), a row per trial as it ends, then the
    best trial and the ``--set`` line that reproduces it."""

    def __init__(self, console: Console, *, plain: bool, quiet: bool = False, wide: bool = False):
        self.console, self.plain, self.quiet, self.wide = console, plain, quiet, wide
        self.layout = None

    def start(self, first: str, lines: list[tuple[str, str]], keys: list[str], metric: str) -> None:
        """``first``: the study and its storage (always shown); then the search, and the table's header."""
        self.console.print(Text(first, style="" if self.plain else "bold"), soft_wrap=True)
        self.keys, self.metric = keys, metric
        cols = [Col("trial", width=5)] + [Col(k, width=10, align="right") for k in keys] + [
            Col(metric, width=10), Col("time_s", width=7), Col("state", align="left")]
        self.layout = fit(cols, [], None if self.wide else self.console.width, plain=self.plain)
        if self.quiet:
            return
        print_lines(self.console, kv_lines(self.console, lines, self.console.width, key_width=12))
        self.console.print("")
        note = self.layout.note()
        if note:
            print_blocks(self.console, [Text(note)])
        print_lines(self.console, self.layout.header())

    def cells(self, row: dict) -> list[str]:
        d = row.get("duration_s")
        return ([str(row["number"])] + [value_cell(row["params"].get(k)) if k in row["params"] else "-"
                                        for k in self.keys]
                + [fmt(row["value"]) if row["value"] is not None else "-", f"{d:.2f}" if d is not None else "-",
                   state_cell(row)])

    def trial(self, row: dict) -> None:
        if not self.quiet:
            print_lines(self.console, self.layout.row(self.cells(row)))

    def finish(self, lines: list[tuple[str, str]]) -> None:
        if not self.quiet:
            self.console.print("")
        print_lines(self.console, kv_lines(self.console, lines, self.console.width, key_width=12))


def summary_lines(rows: list[dict], new: int, best: Optional[dict], metric: str, direction: str,
                  reproduce: Optional[str], outputs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "failed", "running")}
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [("trials", f"{len(rows)} in the study{f' ({text})' if text else ''}; {new} ran now")]
    if best is None:
        lines.append(("best", "no complete trial yet"))
    else:
        params = ", ".join(f"{k}={value_cell(v)}" for k, v in best["params"].items())
        lines.append(("best", f"trial {best['number']}: {metric} {fmt(best['value'])} ({direction}d); {params}"))
        lines.append(("reproduce", reproduce))
    lines += outputs
    return lines


def tune_document(study: str, storage: str, metric: str, direction: str, best: Optional[dict],
                  rows: list[dict]) -> dict:
    """``tune --format json``: ``{"study", "storage", "metric", "direction", "best": {"number", "value",
    "params"} or null, "trials": [{"number", "state", "value", "params", "duration_s"}]}`` (every trial
    of the study, by number; state complete, pruned, failed or running)."""
    return finite({
        "study": study, "storage": storage, "metric": metric, "direction": direction,
        "best": None if best is None else {"number": best["number"], "value": best["value"],
                                           "params": dict(best["params"])},
        "trials": [{k: r[k] for k in TRIAL_KEYS} for r in sorted(rows, key=lambda r: r["number"])],
    })


@one_output
def plot_study(study, path: Path, title: str, metric: str = "Objective Value") -> str:
    """Optuna's optimization history and parameter importances (``optuna.visualization.matplotlib``),
    side by side in one figure, headless. The history's axis is logarithmic when the values are positive
    and span more than 100×; the importances are Optuna's PED-ANOVA. Returns a note on what could not be
    drawn ('' when all was): the importances need two complete trials with different values."""
    import io
    import warnings

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    from backprop_cli.io.atomic import write_atomic

    panels, notes = [], []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    values = [t.value for t in complete]

    def history():
        ax = ovm.plot_optimization_history(study, target_name=metric)
        if values and min(values) > 0 and max(values) > 100 * min(values):
            ax.set_yscale("log")
        return ax

    def importances():
        # PED-ANOVA (Optuna's default from 4.0): deterministic and needs no scikit-learn, as fANOVA does
        ped = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
        return ovm.plot_param_importances(study, evaluator=ped() if ped else None, target_name=metric)

    makers = [("optimization history", history)]
    if len(complete) >= 2 and len(set(values)) > 1:
        makers.append(("parameter importances", importances))
    else:
        notes.append("no parameter importances: they need two complete trials with different values")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for its matplotlib plots
        for name, make in makers:
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as e:
                notes.append(f"no {name}: {e}")
                continue
            fig = ax.figure
            fig.set_size_inches(7, 4.5)
            plain_text(fig)  # parameter names and the metric are data, not mathtext
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            plt.close(fig)
            buf.seek(0)
            panels.append(plt.imread(buf))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(7 * max(1, len(panels)), 4.9), dpi=110,
                             squeeze=False)
    for ax, img in zip(axes[0], panels):
        ax.imshow(img)
    for ax in axes[0]:
        ax.set_axis_off()
    try:
        fig.suptitle(title, fontsize=10)
        plain_text(fig)  # the title holds the config's and the study's names
        fig.subplots_adjust(left=0, right=1, bottom=0, top=0.93, wspace=0)
        kind = path.suffix.lower().lstrip(".")
        write_atomic(path, lambda f: fig.savefig(f, format=kind), mode="wb")
    finally:
        plt.close(fig)
    return "; ".join(notes)


"""train's output: the start panel, the step rows (one fitted layout), warnings and the summary. No torch.
"""

from __future__ import annotations

import math
from typing import IO, Optional

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backprop_cli.core.records import ALL_METRICS, StepRecord, Summary, is_logging_step
from backprop_cli.errors import OutputClosed
from backprop_cli.render.console import Starting, fmt, fmt_options, loading_line, shown
from backprop_cli.render.documents import json_text, train_document
from backprop_cli.render.evaluation import evaluation_tables
from backprop_cli.render.fit import NUM_WIDTH, Col, fit, kv_lines, print_blocks, print_lines


def _cures(m: dict) -> str:
    """The model line's norm, dropout and skip connections (nothing when the net has none)."""
    out = ""
    if m.get("norm", "none") != "none":
        out += f", {m['norm']} norm"
    drops = m.get("dropout") or []
    if any(drops):
        out += ", dropout " + (fmt(drops[0]) if len(set(drops)) == 1 else "[" + ", ".join(fmt(p) for p in drops) + "]")
    if m.get("residual_layers"):
        out += ", skip around " + ", ".join(m["residual_layers"])
    return out


def _run_lines(info: dict) -> list[tuple[str, str]]:
    m = info["model"]
    sizes = " → ".join(str(s) for s in m["sizes"])
    act = m["activation"] + (f" ({fmt_options(m['activation_options'])})" if m["activation_options"] else "")
    shapes = ", ".join(f"{n} {list(s)}" for n, s in m["params"].items())
    d = info["data"]
    loss = info["loss"]
    opt = info["optimizer"]
    lines = [
        ("model", f"{'TwoLayerNet' if len(m['sizes']) == 3 else 'MLP'} {sizes}, {act}, bias {'on' if m['bias'] else 'off'}"
                  + (f", {m['init']} init" if m.get("init", "default") != "default" else "") + _cures(m)),
        ("parameters", f"{m['parameter_count']:,}: {shapes}"),
        ("loss", (f"{loss['name']} ({fmt_options(loss['options'])})" if loss["options"] else loss["name"])
                 + (f"; {loss['auto_weights']}: auto, from the training rows" if loss.get("auto_weights") else "")),
        ("optimizer", f"{opt['name']} ({fmt_options(opt['options'])})"
                      + (f", {opt['implementation']} implementation" if opt.get("implementation") else "")),
        ("device", info["device"]),
        *([("threads", info["threads_why"])] if info.get("threads_why") else []),
        ("data", f"{d['source']}, {d['samples']} {'training rows' if d.get('validation') else 'samples'}, "
                 f"batch {d['batch_size']}, {d['batches_per_epoch']} batch(es)/epoch, "
                 f"shuffle {'on' if d['shuffle'] else 'off'}" + (", drop_last" if d.get("drop_last") else "")
                 + (f" ({d['drop_last_why']})" if d.get("drop_last_why") else "")
                 + (f"; {d['dropped']} row(s) with missing cells left out" if d.get("dropped") else "")),
        ("steps", f"{info['steps']} (seed {info['seed']})"),
    ]
    if d.get("inputs"):
        lines.append(("inputs", d["inputs"] + (f"; {d['dropped_target']} row(s) without a target left out"
                                               if d.get("dropped_target") else "")))
    if d.get("classes"):
        listed = ", ".join(d["classes"][:10]) + (", …" if len(d["classes"]) > 10 else "")
        lines.append(("classes", f"{len(d['classes'])}: {listed}"))
    if d.get("validation"):
        lines.append(("validation", d["validation"]["source"] or f"{d['validation']['rows']} rows"))
    if d.get("standardize") or d.get("standardize_target"):
        what = " and ".join(w for w, on in (("features", d.get("standardize")), ("targets", d.get("standardize_target")))
                            if on)
        lines.append(("scaling", f"{what} standardized with the training rows' mean and std"))
        if d.get("standardize_target"):
            lines.append(("units", "loss (each step's batch, epoch loss) is in standardized target units; "
                                   "train_loss, val_loss, mae and r2 in the target's own units"))
    ev = info.get("evaluation")
    if ev:
        every = f"every {ev['every']} steps" + (" (each epoch)" if ev["every"] == ev["per_epoch"] else "")
        text = f"{every} and at the end, on all validation and all training rows"
        if ev.get("early_stopping"):
            es = ev["early_stopping"]
            text += (f"; early stopping: patience {es['patience']}, min_delta {fmt(es['min_delta'])}"
                     + (", restore_best (the model of the best evaluation is kept)" if es.get("restore_best") else ""))
        if ev.get("save_best"):
            text += f"; best model → {ev['save_best']}"
        lines.append(("evaluate", text))
    sched = dict(info.get("scheduler") or {"name": "none"})
    if sched.get("name", "none") != "none":
        name = sched.pop("name")
        lines.append(("schedule", f"{name} ({fmt_options({k: v for k, v in sched.items() if v is not None})})"))
    extras = []
    if info.get("clip_grad_norm") is not None:
        extras.append(f"clip grad norm at {fmt(info['clip_grad_norm'])}")
    if info.get("on_nonfinite") == "skip":
        extras.append("skip steps with non-finite values")
    if info.get("detect_anomaly"):
        extras.append("autograd anomaly detection (slower)")
    if info.get("zero_grad") is False:
        extras.append("no zero_grad: gradients accumulate across steps")
    if extras:
        lines.append(("guards", ", ".join(extras)))
    dist = info.get("distributed")
    if dist:
        lines.append(("processes", f"{dist['world']} ranks, DistributedDataParallel over {dist['backend']}; "
                                   f"each rank takes a slice of every global batch of {d['batch_size']}"))
    if info.get("precision", "fp32") != "fp32" or info.get("compile"):
        lines.append(("precision", f"{info.get('precision', 'fp32')}" + (", torch.compile" if info.get("compile") else "")))
    resume = info.get("resume")
    if resume:
        lines.append(("resume", f"from {resume['path']} at step {resume['step']}, running steps "
                                f"{resume['step'] + 1}…{info['steps']}"))
        for change in resume["changes"]:
            lines.append(("changed", change))
        if "save" in resume and resume["save"] is None:  # resuming to train on, and keeping nothing
            kept = ("the last weights are (--save-best keeps only the best evaluation's)" if
                    (info.get("evaluation") or {}).get("save_best") else "the resumed model is")
            lines.append(("not saved", f"no --save: {kept} lost when the run ends; add --save FILE "
                                       "(it may be the --resume file)"))
    return lines

def _param_short(name: str) -> str:
    """``layerK.weight`` → ``wK``, ``layerK.bias`` → ``bK`` (train's abbreviated headers)."""
    layer, _, kind = name.partition(".")
    if layer.startswith("layer") and layer[5:].isdigit() and kind in ("weight", "bias"):
        return kind[0] + layer[5:]
    return name

def _param_order(names: list[str]) -> list[str]:
    """Which per-parameter columns stay longest on a narrow terminal: weights before biases, and of
    each the first and last layers before the middle ones."""
    def ends_first(group: list[str]) -> list[str]:
        out, lo, hi = [], 0, len(group) - 1
        while lo <= hi:
            out.append(group[lo])
            if hi != lo:
                out.append(group[hi])
            lo, hi = lo + 1, hi - 1
        return out

    weights = [n for n in names if not n.endswith(".bias")]
    return ends_first(weights) + ends_first([n for n in names if n.endswith(".bias")])

EVAL_COLUMNS = {"classification": ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_f1_macro",
                                    "val_roc_auc"),
                "regression": ("train_loss", "val_loss", "val_mae", "val_rmse", "val_r2")}

EVAL_SHORT = {"train_loss": "train", "val_loss": "val", "train_accuracy": "train_acc", "val_accuracy": "val_acc",
              "val_f1_macro": "f1", "val_roc_auc": "auc", "val_mae": "mae", "val_rmse": "rmse", "val_r2": "r2"}

def train_columns(names: list[str], total_steps: int, *, scheduled: bool, scale: bool, skips: bool,
                  epochs: int = 1, evaluation: tuple[str, ...] = ()) -> list[Col]:
    """The columns of train's step rows, in order: step, epoch, loss, grad_norm, each parameter's
    gradient norm, lr, the fp16 loss scale, epoch_loss, the evaluation's columns (with validation
    data) and a marker for skipped steps.

    step, loss, grad_norm and val_loss are always shown. On a narrow terminal the others give way in
    this order: a constant lr (the start panel shows it), the biases' norms, then without evaluation
    epoch and epoch_loss before the weights' norms (weights: first and last layer kept longest), with
    evaluation the weights' norms first, then epoch, the training-rows metrics and epoch_loss; last a
    scheduled lr, the loss scale and the other validation metrics."""
    order = _param_order(names)
    weights = [n for n in order if not n.endswith(".bias")]
    biases = [n for n in order if n.endswith(".bias")]
    train_side = [k for k in evaluation if k.startswith("train_")]
    val_side = [k for k in evaluation if k.startswith("val_") and k != "val_loss"]
    # first to give way first; each list ends with the column kept longest
    give_way = (([] if scheduled else ["lr"]) + biases[::-1]
                + (weights[::-1] + ["epoch"] + train_side[::-1] + ["epoch_loss"] if evaluation
                   else ["epoch", "epoch_loss"] + weights[::-1])
                + (["lr"] if scheduled else []) + (["loss_scale"] if scale else []) + val_side[::-1])
    drop = {name: len(give_way) - k for k, name in enumerate(give_way)}

    def col(name: str, width: int = NUM_WIDTH, short: Optional[str] = None, align: str = "right") -> Col:
        return Col(name, short=short, align=align, width=width, drop=drop.get(name, 0))

    cols = [col("step", len(str(total_steps))), col("epoch", len(str(max(1, epochs)))), col("loss"),
            col("grad_norm")]
    cols += [col(n, short=_param_short(n)) for n in names]
    cols.append(col("lr"))
    if scale:
        cols.append(col("loss_scale", short="scale"))
    cols.append(col("epoch_loss", short="ep_loss"))
    cols += [col(k, short=EVAL_SHORT.get(k)) for k in evaluation]
    if skips:
        cols.append(col("", len("skipped"), align="left"))
    return cols

TRAIN_HINT = "--wide shows every column, --metrics writes every number"

TRAIN_LEGEND = "wK, bK = the gradient norms of layerK.weight, layerK.bias"

TRAIN_LEGEND_NO_BIAS = "wK = the gradient norm of layerK.weight"

class TrainReport:
    """Start panel, a row every ``log_every`` steps (plus the first and last), summary at the end.

    The rows fit the console's width: :func:`train_columns` says which per-parameter columns give way
    first (``wide``: every column)."""

    show_progress = True  # the live displays (the bar, the line while torch loads); off for recorded output

    def __init__(self, console: Console, *, plain: bool, quiet: bool = False, json_out: Optional[IO] = None,
                 wide: bool = False):
        self.console, self.plain, self.quiet, self.wide = console, plain, quiet, wide
        self.json_out = json_out  # --format json: the summary document goes here, everything else to console
        self.progress = None
        self.task = None
        self.waiting: Optional[Starting] = None

    def starting(self, text: str) -> Starting:
        """Show ``text`` (transient, terminal only) until :meth:`start`; use as a context manager."""
        from backprop_cli.torchrun import rank

        self.waiting = Starting(self.console, loading_line("train", text),
                                enabled=not (self.plain or self.quiet) and self.show_progress and rank() == 0)
        return self.waiting

    def start(self, info: dict, log_every: int) -> None:
        if self.waiting is not None:
            self.waiting.stop()
        self.log_every = log_every
        self.std_target = bool(info["data"].get("standardize_target"))
        self.total = info["steps"]
        self.first = info.get("start_step", 0) + 1
        self.names = list(info["model"]["params"])
        scheduled = (info.get("scheduler") or {}).get("name", "none") != "none"
        self.scale = info.get("precision") == "fp16"
        self.skips = self.scale or info.get("on_nonfinite") == "skip"
        per_epoch = max(1, info["data"].get("batches_per_epoch", 1))
        kind = "regression" if info["task"] == "regression" else "classification"
        self.evaluation = EVAL_COLUMNS[kind] if info.get("evaluation") else ()
        cols = train_columns(self.names, self.total, scheduled=scheduled, scale=self.scale, skips=self.skips,
                             epochs=-(-self.total // per_epoch), evaluation=self.evaluation)
        self.layout = fit(cols, [], None if self.wide else self.console.width, plain=self.plain)
        if self.quiet:
            return
        lines = _run_lines(info) + [("log every", f"{log_every} step(s)")]
        legend = None
        if any(_param_short(n) != n for n in self.names):
            legend = TRAIN_LEGEND if any(n.endswith(".bias") for n in self.names) else TRAIN_LEGEND_NO_BIAS
        note = self.layout.note(TRAIN_HINT, legend)
        if self.plain:
            print_lines(self.console, kv_lines(self.console, lines, self.console.width))
            self.console.print("")
            if note:
                print_blocks(self.console, [Text(note)])
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan")
            grid.add_column()
            for k, v in lines:  # Text, not markup: a value holds names from files ("[red]", "\x1b")
                grid.add_row(Text(shown(k)), Text(shown(v)))
            self.console.print(Panel(grid, title="backprop train", title_align="left", expand=False))
            if note:
                self.console.print(Text(note, style="dim"))
            if self.total > log_every and self.show_progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), console=self.console, transient=True)
                self.task = self.progress.add_task("train", total=self.total, completed=self.first - 1)
        print_lines(self.console, self.layout.header())
        if self.progress is not None:
            self.progress.start()

    def cells(self, r: StepRecord) -> list[str]:
        """A row's cells, one per column of :func:`train_columns`."""
        cells = [str(r.step), "" if r.epoch is None else str(r.epoch), fmt(r.loss), fmt(r.grad_norm)]
        cells += [fmt(r.grad_norms.get(n, math.nan)) for n in self.names]
        cells.append(fmt(r.lr))
        if self.scale:
            cells.append(fmt(r.loss_scale))
        cells.append("" if r.epoch_loss is None else fmt(r.epoch_loss))
        ev = r.evaluation or {}
        cells += [fmt(ev[k]) if k in ev else "" for k in self.evaluation]
        if self.skips:
            cells.append("skipped" if r.skipped else "")
        return cells

    def step(self, r: StepRecord) -> None:
        if self.quiet:
            return
        self.last = r
        if is_logging_step(r.step, self.first, self.log_every, self.total) or r.skipped:
            self._print_row(r)
        if self.progress is not None:
            self.progress.update(self.task, completed=r.step)

    def _print_row(self, r: StepRecord) -> None:
        self.printed = r.step
        print_lines(self.console, self.layout.row(self.cells(r)))

    def warn(self, text: str) -> None:
        """A diagnostics warning, once, where it arose in the table (quiet: in the summary only)."""
        if self.quiet:
            return
        if self.plain:
            print_blocks(self.console, [Text(f"warning: {text}")])
        else:
            print_blocks(self.console, [Text(f"! {text}", style="bold yellow")])

    def dashboard(self, path, runs: dict, title: str) -> None:
        """train --plot: the run's dashboard (render.plots.dashboard), drawn when the run ends."""
        from backprop_cli.render.plots import dashboard

        dashboard(path, runs, title=title)

    def finish(self, summary: Summary, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> None:
        if self.progress is not None:
            self.progress.stop()
        last = getattr(self, "last", None)
        if last is not None and not self.quiet and getattr(self, "printed", None) != last.step:
            self._print_row(last)  # a run that stopped early (or was interrupted) shows where it stopped
        if self.json_out is not None:
            try:
                self.json_out.write(json_text(train_document(summary.as_dict(), outputs, status, reason)) + "\n")
                self.json_out.flush()
            except BrokenPipeError:
                raise OutputClosed() from None
        lines = _summary_lines(summary, outputs, status, reason, self.quiet, getattr(self, "std_target", False))
        if self.plain:
            if not self.quiet:
                self.console.print("")
            print_lines(self.console, kv_lines(self.console, lines, self.console.width))
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold green" if status == "done" else "bold yellow")
            grid.add_column()
            for k, v in lines:  # Text, not markup: a value holds names from files ("[red]", "\x1b")
                grid.add_row(Text(shown(k)), Text(shown(v)))
            self.console.print(grid)
        if not self.quiet:
            for block in evaluation_tables(summary.evaluation, self.plain, self.wide):
                self.console.print()
                self.console.print(block, crop=False)

def _summary_lines(s: Summary, outputs: dict[str, str], status: str, reason: Optional[str],
                   quiet: bool = False, std_target: bool = False) -> list[tuple[str, str]]:
    rate = fmt(s.steps_per_s) if not math.isnan(s.steps_per_s) else "-"
    why = f" ({reason})" if reason and status != "done" else ""
    epochs = f", epoch {s.epochs}" if s.epochs else ""
    lines = [
        (status, f"{s.steps} step(s){epochs} in {fmt(s.wall_time)} s ({rate} steps/s){why}"),
        ("batch loss", f"first {fmt(s.first_loss)}, last {fmt(s.last_loss)}, best {fmt(s.best_loss)} "
                       f"(step {s.best_step}): each the loss of one batch"
                       + (", in standardized target units" if std_target else "")
         if s.steps else "no step completed"),
    ]
    if not math.isnan(s.epoch_loss):
        lines.append(("epoch loss", f"{fmt(s.epoch_loss)}: the mean over every row of the last complete epoch"
                      + (" (standardized units)" if std_target else "")))
    v = s.validation
    if v:
        metrics = ", ".join(f"{k} {fmt(v[k])}" for k in ALL_METRICS if k in v)
        units = " (target units)" if std_target else ""
        if v.get("restored_best") is not None:
            lines.append(("validation", f"loss {fmt(v['loss'])}{units}" + (f", {metrics}" if metrics else "")
                          + f" (all validation rows, the best evaluation, step {v['restored_best']}); restore_best: "
                          f"the model at the end and --save are those of step {v['restored_best']}"))
        else:
            lines.append(("validation", f"loss {fmt(v['loss'])}{units}" + (f", {metrics}" if metrics else "")
                          + f" (all validation rows, last evaluation); best loss {fmt(v['best_loss'])} at step "
                          f"{v['best_step']}"))
    if s.clipped:
        lines.append(("clipped", f"{s.clipped} of {s.steps} step(s)"))
    if s.skipped:
        lines.append(("skipped", f"{s.skipped} step(s) with non-finite values"))
    if s.warnings and quiet:
        lines += [("warning", w) for w in s.warnings]
    elif s.warnings:
        lines.append(("warnings", f"{len(s.warnings)}, above"))
    for what, text in outputs.items():
        lines.append((what, text if text.startswith("not written") else f"wrote {text}"))
    return lines

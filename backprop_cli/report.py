"""All terminal rendering. Rich on a terminal; plain lines when output is piped or NO_COLOR is set.

This module formats what it is given and computes nothing; it imports no torch.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Optional

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backprop_cli.documents import json_text, train_document
from backprop_cli.records import StepRecord, Summary, is_logging_step


PLAIN_WIDTH = 200


def plain_output(stream: Optional[IO] = None) -> bool:
    """Plain text (no ANSI, no boxes, no progress bars) unless writing to a colour terminal."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def make_console(stream: Optional[IO] = None) -> Console:
    stream = stream or sys.stdout
    plain = plain_output(stream)
    return Console(file=stream, highlight=False, no_color=plain, force_terminal=not plain,
                   emoji=False, width=PLAIN_WIDTH if plain else None)


def fmt(v: float) -> str:
    """Five significant digits; scientific notation for tiny or huge magnitudes."""
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-3 or a >= 1e5:
        return f"{v:.3e}"
    return f"{v:.5g}"


def fmt_options(options: dict) -> str:
    parts = []
    for k, v in options.items():
        if isinstance(v, (list, tuple)):
            v = "(" + ", ".join(fmt(x) for x in v) + ")"
        elif isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float):
            v = fmt(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def error_line(message: str) -> str:
    return f"error: {message}"


def print_errors(messages: list[str], stream: Optional[IO] = None) -> None:
    stream = stream or sys.stderr
    for m in messages:
        print(error_line(m), file=stream)
    stream.flush()


# --------------------------------------------------------------------------- train


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
                  + (f", {m['init']} init" if m.get("init", "default") != "default" else "")),
        ("parameters", f"{m['parameter_count']:,}: {shapes}"),
        ("loss", f"{loss['name']} ({fmt_options(loss['options'])})" if loss["options"] else loss["name"]),
        ("optimizer", f"{opt['name']} ({fmt_options(opt['options'])})"
                      + (f", {opt['implementation']} implementation" if opt.get("implementation") else "")),
        ("device", info["device"]),
        *([("threads", info["threads_why"])] if info.get("threads_why") else []),
        ("data", f"{d['source']}, {d['samples']} {'training rows' if d.get('validation') else 'samples'}, "
                 f"batch {d['batch_size']}, {d['batches_per_epoch']} batch(es)/epoch, "
                 f"shuffle {'on' if d['shuffle'] else 'off'}" + (", drop_last" if d.get("drop_last") else "")
                 + (f"; {d['dropped']} row(s) with missing cells left out" if d.get("dropped") else "")),
        ("steps", f"{info['steps']} (seed {info['seed']})"),
    ]
    if d.get("classes"):
        shown = ", ".join(d["classes"][:10]) + (", …" if len(d["classes"]) > 10 else "")
        lines.append(("classes", f"{len(d['classes'])}: {shown}"))
    if d.get("validation"):
        lines.append(("validation", d["validation"]["source"] or f"{d['validation']['rows']} rows"))
    if d.get("standardize") or d.get("standardize_target"):
        what = " and ".join(w for w, on in (("features", d.get("standardize")), ("targets", d.get("standardize_target")))
                            if on)
        lines.append(("scaling", f"{what} standardized with the training rows' mean and std"))
    ev = info.get("evaluation")
    if ev:
        every = f"every {ev['every']} steps" + (" (each epoch)" if ev["every"] == ev["per_epoch"] else "")
        text = f"{every} and at the end, on all validation and all training rows"
        if ev.get("early_stopping"):
            es = ev["early_stopping"]
            text += f"; early stopping: patience {es['patience']}, min_delta {fmt(es['min_delta'])}"
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
    return lines


EVAL_COLUMNS = {"classification": ("train_loss", "val_loss", "train_accuracy", "val_accuracy"),
                "regression": ("train_loss", "val_loss", "val_mae", "val_r2")}


class _Columns:
    """Fixed-width step rows: step, epoch, loss, grad_norm, one column per parameter, lr, epoch_loss, and the
    evaluation's columns when there is validation data."""

    def __init__(self, names: list[str], total_steps: int, scale: bool = False, epochs: int = 1,
                 evaluation: tuple[str, ...] = ()):
        self.names = names
        self.step_w = max(4, len(str(total_steps)))
        self.epoch_w = max(5, len(str(epochs)))
        self.widths = [max(10, len(n)) for n in names]
        self.scale = scale
        self.evaluation = evaluation

    def header(self) -> str:
        cells = [f"{'step':>{self.step_w}}", f"{'epoch':>{self.epoch_w}}", f"{'loss':>11}", f"{'grad_norm':>11}"]
        cells += [f"{n:>{w}}" for n, w in zip(self.names, self.widths)]
        cells.append(f"{'lr':>10}")
        if self.scale:
            cells.append(f"{'loss scale':>10}")
        cells.append(f"{'epoch_loss':>11}")
        cells += [f"{k:>{max(11, len(k))}}" for k in self.evaluation]
        return "  ".join(cells)

    def row(self, r: StepRecord) -> str:
        cells = [f"{r.step:>{self.step_w}}", f"{r.epoch if r.epoch is not None else '':>{self.epoch_w}}",
                 f"{fmt(r.loss):>11}", f"{fmt(r.grad_norm):>11}"]
        cells += [f"{fmt(r.grad_norms.get(n, math.nan)):>{w}}" for n, w in zip(self.names, self.widths)]
        cells.append(f"{fmt(r.lr):>10}")
        if self.scale:
            cells.append(f"{fmt(r.loss_scale):>10}")
        cells.append(f"{fmt(r.epoch_loss) if r.epoch_loss is not None else '':>11}")
        ev = r.evaluation or {}
        cells += [f"{fmt(ev[k]) if k in ev else '':>{max(11, len(k))}}" for k in self.evaluation]
        if r.skipped:
            cells.append("  skipped")
        return "  ".join(cells).rstrip()


def _summary_lines(s: Summary, outputs: dict[str, str], status: str, reason: Optional[str],
                   quiet: bool = False) -> list[tuple[str, str]]:
    rate = fmt(s.steps_per_s) if not math.isnan(s.steps_per_s) else "-"
    why = f" ({reason})" if reason and status != "done" else ""
    epochs = f", epoch {s.epochs}" if s.epochs else ""
    lines = [
        (status, f"{s.steps} step(s){epochs} in {s.wall_time:.3g} s ({rate} steps/s){why}"),
        ("batch loss", f"first {fmt(s.first_loss)}, last {fmt(s.last_loss)}, best {fmt(s.best_loss)} "
                       f"(step {s.best_step}): each the loss of one batch"
         if s.steps else "no step completed"),
    ]
    if not math.isnan(s.epoch_loss):
        lines.append(("epoch loss", f"{fmt(s.epoch_loss)}: the mean over every row of the last complete epoch"))
    v = s.validation
    if v:
        metrics = ", ".join(f"{k} {fmt(v[k])}" for k in ("accuracy", "mae", "r2") if k in v)
        lines.append(("validation", f"loss {fmt(v['loss'])}" + (f", {metrics}" if metrics else "")
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


class Starting:
    """A transient line on a terminal from the moment the config is read until the first real output:
    loading torch and building the run take seconds, and the terminal is never blank meanwhile.
    Nothing on plain output (pipes, files, NO_COLOR terminals keep their exact text)."""

    def __init__(self, console: Console, text: str, enabled: bool = True):
        self.status = None
        if enabled:
            line = text
            room = max(10, console.width - 3)  # one line beside the spinner: cut with an ellipsis
            line = line if len(line) <= room else line[:room - 1] + "…"
            self.status = console.status(Text(line, style="dim"), spinner="dots")
            self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def __enter__(self) -> "Starting":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _evaluation_tables(detail: Optional[dict], plain: bool) -> list:
    """Per-class precision, recall, F1 and support, and the confusion matrix (classification)."""
    if not detail or not detail.get("per_class"):
        return []
    t = _table("validation rows, per class",
               [("class", "left"), ("precision", "right"), ("recall", "right"), ("f1", "right"),
                ("support", "right")], plain)
    for row in detail["per_class"]:
        t.add_row(row["class"], fmt(row["precision"]), fmt(row["recall"]), fmt(row["f1"]), str(row["support"]))
    blocks: list = [t]
    conf = detail.get("confusion")
    if conf:
        names = detail["classes"]
        c = _table("confusion matrix",
                   [("true \\ predicted", "left")]
                   + [(n, "right") for n in names], plain)
        for name, row in zip(names, conf):
            c.add_row(name, *(str(v) for v in row))
        blocks.append(c)
    return blocks


class TrainReport:
    """Start panel, a row every ``log_every`` steps (plus the first and last), summary at the end."""

    show_progress = True  # docs/make_screenshots.py turns the live bar off for recorded output

    def __init__(self, console: Console, *, plain: bool, quiet: bool = False, json_out: Optional[IO] = None):
        self.console, self.plain, self.quiet = console, plain, quiet
        self.json_out = json_out  # --format json: the summary document goes here, everything else to console
        self.progress = None
        self.task = None
        self.waiting: Optional[Starting] = None

    def starting(self, text: str) -> Starting:
        """Show ``text`` (transient, terminal only) until :meth:`start`; use as a context manager."""
        from backprop_cli.torchrun import rank

        self.waiting = Starting(self.console, f"backprop train: loading torch … {text}",
                                enabled=not (self.plain or self.quiet) and rank() == 0)
        return self.waiting

    def start(self, info: dict, log_every: int) -> None:
        if self.waiting is not None:
            self.waiting.stop()
        self.log_every = log_every
        self.total = info["steps"]
        self.first = info.get("start_step", 0) + 1
        per_epoch = max(1, info["data"].get("batches_per_epoch", 1))
        kind = "classification" if info["loss"]["name"] in ("cross_entropy", "bce_with_logits") else "regression"
        self.cols = _Columns(list(info["model"]["params"]), self.total, scale=info.get("precision") == "fp16",
                             epochs=-(-self.total // per_epoch),
                             evaluation=EVAL_COLUMNS[kind] if info.get("evaluation") else ())
        self.hidden_norms = False
        if not self.plain and self.cols.evaluation and len(self.cols.header()) > self.console.width:
            # the evaluation's columns matter more on a narrow terminal than each parameter's gradient norm
            self.cols.names, self.cols.widths, self.hidden_norms = [], [], True
        if self.quiet:
            return
        lines = _run_lines(info) + [("log every", f"{log_every} step(s)")]
        if self.plain:
            for k, v in lines:
                self.console.print(f"{(k + ':').ljust(11)} {v}", markup=False)
            self.console.print("", markup=False)
            self.console.print(self.cols.header(), markup=False)
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(Panel(grid, title="backprop train", title_align="left", expand=False))
            if self.hidden_norms:
                self.console.print(Text("(each parameter's gradient norm is left out to fit the terminal; "
                                        "--metrics keeps them)", style="dim"))
            self.console.print(Text(self.cols.header(), style="bold"))
            if self.total > log_every and self.show_progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), console=self.console, transient=True)
                self.task = self.progress.add_task("train", total=self.total, completed=self.first - 1)
                self.progress.start()

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
        line = self.cols.row(r)
        if self.plain:
            self.console.print(line, markup=False)
        else:
            self.console.print(Text(line))

    def warn(self, text: str) -> None:
        """A diagnostics warning, once, where it arose in the table (quiet: in the summary only)."""
        if self.quiet:
            return
        if self.plain:
            self.console.print(f"warning: {text}", markup=False, soft_wrap=True)
        else:
            self.console.print(Text(f"! {text}", style="bold yellow"))

    def finish(self, summary: Summary, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> None:
        if self.progress is not None:
            self.progress.stop()
        last = getattr(self, "last", None)
        if last is not None and not self.quiet and getattr(self, "printed", None) != last.step:
            self._print_row(last)  # a run that stopped early (or was interrupted) shows where it stopped
        if self.json_out is not None:
            self.json_out.write(json_text(train_document(summary.as_dict(), outputs, status, reason)) + "\n")
            self.json_out.flush()
        lines = _summary_lines(summary, outputs, status, reason, self.quiet)
        if self.plain:
            if not self.quiet:
                self.console.print("", markup=False)
            for k, v in lines:
                self.console.print(f"{(k + ':').ljust(11)} {v}", markup=False)
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold green" if status == "done" else "bold yellow")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(grid)
        if not self.quiet:
            for block in _evaluation_tables(summary.evaluation, self.plain):
                self.console.print()
                self.console.print(block)


# --------------------------------------------------------------------------- tables


def _table(title: str, columns: list[tuple[str, str]], plain: bool) -> Table:
    """A table that is boxed on a terminal and bare aligned columns in plain mode."""
    from rich import box

    t = Table(title=title, title_justify="left", box=None if plain else box.SIMPLE_HEAVY,
              show_edge=not plain, pad_edge=False, title_style="" if plain else "bold")
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=True, overflow="fold")
    return t


def _print_blocks(console: Console, blocks: list) -> None:
    for i, b in enumerate(blocks):
        if i:
            console.print()
        console.print(b)


# --------------------------------------------------------------------------- inspect-grads


def render_inspect(console: Console, plain: bool, result: dict) -> None:
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples); "
                "gradients as optimizer.step() would use them")
    cols = [("parameter", "left"), ("shape", "left"), ("norm", "right"), ("mean", "right"), ("std", "right"),
            ("min", "right"), ("max", "right"), ("abs_max", "right"), ("zero_fraction", "right"),
            ("grad_to_weight", "right")]
    t = _table("gradients", cols, plain)
    for name, s in result["params"].items():
        shape = "×".join(str(d) for d in s["shape"]) or "scalar"
        if s["norm"] is None:
            t.add_row(name, shape, "None", *([""] * 7))
            continue
        t.add_row(name, shape, fmt(s["norm"]), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]),
                  fmt(s["abs_max"]), fmt(s["zero_fraction"]), fmt(s["grad_to_weight"]))
    legend = Text("norm: ‖g‖₂   abs_max: max |g|   zero_fraction: share of exact zeros   "
                  "grad_to_weight: ‖g‖/‖w‖", style="" if plain else "dim")
    blocks: list = [head, t, legend]
    if result["warnings"]:
        blocks.append(Text("\n".join(f"! {w}" for w in result["warnings"]), style="" if plain else "bold yellow"))
    clip = result.get("clip")
    if clip is not None:
        ct = _table(f"clip_grad_norm_(max_norm={fmt(clip['max_norm'])}): "
                    f"{'clipped' if clip['clipped'] else 'not clipped (total norm is within max_norm)'}",
                    [("parameter", "left"), ("norm before", "right"), ("norm after", "right")], plain)
        for name, s in result["params"].items():
            if s["norm"] is not None:
                ct.add_row(name, fmt(s["norm"]), fmt(clip["norms"][name]))
        ct.add_row("total", fmt(clip["total_norm_before"]), fmt(clip["total_norm_after"]))
        blocks.append(ct)
    for name, text in result["text"].items():
        block = Text(f"{name}.grad\n", style="" if plain else "bold cyan")
        if clip is not None:
            block.append("before clipping:\n" + text + "\nafter clipping:\n" + clip["text"][name], style="")
        else:
            block.append(text, style="")
        blocks.append(block)
    blocks.append(Text("(train --no-zero-grad skips zero_grad, so these would add onto the previous step's)",
                       style="" if plain else "dim"))
    _print_blocks(console, blocks)


# --------------------------------------------------------------------------- check-grads


def render_check(console: Console, plain: bool, result: dict) -> None:
    tol = result["tolerance"]
    cols = [("parameter", "left"), ("elements", "right"), ("chain_rule.max_abs", "right"),
            ("chain_rule.max_rel", "right"), ("finite_diff.max_abs", "right"), ("finite_diff.max_rel", "right"),
            ("finite_diff.checked", "right"), ("pass", "left")]
    t = _table("autograd vs the hand-written chain rule vs float64 central differences", cols, plain)
    for name, p in result["params"].items():
        ok = "PASS" if p["pass"] else "FAIL"
        if not plain:
            ok = f"[green]{ok}[/]" if p["pass"] else f"[bold red]{ok}[/]"
        t.add_row(name, str(p["elements"]), fmt(p["chain_rule"]["max_abs"]), fmt(p["chain_rule"]["max_rel"]),
                  fmt(p["finite_diff"]["max_abs"]), fmt(p["finite_diff"]["max_rel"]),
                  str(p["finite_diff"]["checked"]), ok)
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples)")
    foot = Text(f"tolerance ({tol['dtype']}): |autograd − other| ≤ {fmt(tol['atol_fraction_of_max'])}·max|g| + "
                f"{fmt(tol['rtol'])}·|g| per element; finite-difference step {fmt(tol['finite_diff_step'])}\n"
                + ("all gradients agree: PASS" if result["pass"] else "some gradients disagree: FAIL"))
    _print_blocks(console, [head, t, foot])


# --------------------------------------------------------------------------- evaluate


def render_evaluate(console: Console, plain: bool, r: dict) -> None:
    head = Text(f"{r['checkpoint']} (step {r['step']}) on {r['data']}: {r['rows']} rows")
    t = _table("", [("metric", "left"), ("value", "right")], plain)
    t.add_row("loss", fmt(r["loss"]))
    for key in ("accuracy", "mae", "r2"):
        if key in r:
            t.add_row(key, fmt(r[key]))
    _print_blocks(console, [head, t, *_evaluation_tables(r, plain)])


# --------------------------------------------------------------------------- explain


def render_explain(console: Console, plain: bool, r: dict) -> None:
    i, f, c, a, u = r["inputs"], r["forward"], r["chain_rule"], r["autograd"], r["update"]
    x, y, w1, w2, lr = (fmt(i[k]) for k in ("x", "y", "w1", "w2", "lr"))
    intro = Text("x → (w1) → z1 → (w2) → ŷ = z2,  no bias, identity activation,  L = ½(y − ŷ)²\n"
                 f"x = {x},  y = {y},  w1 = {w1},  w2 = {w2},  η = {lr}")
    fw = _table("1. forward", [("quantity", "left"), ("formula", "left"), ("numbers", "left"), ("value", "right")], plain)
    fw.add_row("z1", "w1·x", f"{w1}·{x}", fmt(f["z1"]))
    fw.add_row("ŷ = z2", "w2·z1", f"{w2}·{fmt(f['z1'])}", fmt(f["y_hat"]))
    fw.add_row("L", "½(y − ŷ)²", f"½({y} − {fmt(f['y_hat'])})²", fmt(f["loss"]))
    bw = _table("2. backward (chain rule)", [("gradient", "left"), ("chain rule", "left"), ("symbolic", "left"),
                                              ("numbers", "left"), ("value", "right")], plain)
    yh = fmt(f["y_hat"])
    bw.add_row("∂L/∂ŷ", "", "−(y − ŷ)", f"−({y} − {yh})", fmt(r["dL_dy_hat"]))
    bw.add_row("∂L/∂w2", "∂L/∂ŷ · ∂ŷ/∂w2", "−(y − ŷ)·z1", f"−({y} − {yh})·{fmt(f['z1'])}", fmt(c["w2"]))
    bw.add_row("∂L/∂w1", "∂L/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1", "−(y − ŷ)·w2·x", f"−({y} − {yh})·{w2}·{x}", fmt(c["w1"]))
    ag = _table("3. PyTorch autograd (loss.backward())", [("gradient", "left"), ("chain rule", "right"),
                                                          ("autograd", "right"), ("difference", "right")], plain)
    for k in ("w1", "w2"):
        ag.add_row(f"∂L/∂{k}", fmt(c[k]), fmt(a[k]), fmt(a[k] - c[k]))
    up = _table("4. SGD update  w ← w − η·∂L/∂w", [("weight", "left"), ("before", "right"), ("− η·∂L/∂w", "right"),
                                                   ("after", "right")], plain)
    up.add_row("w1", w1, fmt(-i["lr"] * c["w1"]), fmt(u["w1"]))
    up.add_row("w2", w2, fmt(-i["lr"] * c["w2"]), fmt(u["w2"]))
    after = Text(f"loss {fmt(f['loss'])} → {fmt(u['loss_after'])} after one step")
    blocks = [intro, fw, bw, ag, up, after]
    if len(r["history"]) > 1:
        ht = _table(f"{len(r['history'])} steps of SGD", [("step", "right"), ("loss", "right"), ("∂L/∂w1", "right"),
                                                          ("∂L/∂w2", "right"), ("w1", "right"), ("w2", "right")], plain)
        for h in r["history"]:
            ht.add_row(str(h["step"]), fmt(h["loss"]), fmt(h["grad_w1"]), fmt(h["grad_w2"]), fmt(h["w1"]), fmt(h["w2"]))
        blocks += [ht, Text(f"loss after {len(r['history'])} steps: {fmt(r['history'][-1]['loss_after'])}")]
    if r.get("diverged_at") is not None and not math.isfinite(f["loss"]):
        blocks.append(Text("the loss of these numbers is not finite: ŷ = w2·w1·x is past what a float holds"))
    elif r.get("diverged_at") is not None:
        blocks.append(Text(f"diverged at step {r['diverged_at']}: the updates grew past what a float holds; "
                           "η is too large for this example (lower --lr)"))
    _print_blocks(console, blocks)


# --------------------------------------------------------------------------- compare-optimizers

SPARK = "▁▂▃▄▅▆▇█"


def _positive(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v) and v > 0]


def sparkline(values: list[float], width: int = 40, lo: Optional[float] = None, hi: Optional[float] = None) -> str:
    """A curve in block characters on a log scale (from ``lo`` to ``hi``), resampled to ``width`` columns."""
    vals = _positive(values)
    if not vals:
        return ""
    if len(vals) > width:
        step = len(vals) / width
        vals = [vals[min(len(vals) - 1, int(i * step))] for i in range(width)]
    logs = [math.log10(v) for v in vals]
    lo = min(logs) if lo is None else math.log10(lo)
    hi = max(logs) if hi is None else math.log10(hi)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in logs)


def _ms(entry: dict, key: str, seeds: int) -> str:
    m = entry[key]
    if m["mean"] is None:
        return "never" if key == "steps_to_10pct" else "-"
    if key == "steps_to_10pct":
        text = f"{m['mean']:.0f}" if seeds == 1 else f"{m['mean']:.1f} ± {m['std']:.1f}"
        if m.get("reached", seeds) < seeds:
            text += f" ({m['reached']}/{seeds})"
        return text
    return fmt(m["mean"]) if seeds == 1 else f"{fmt(m['mean'])} ± {fmt(m['std'])}"


def render_compare(console: Console, plain: bool, summary: list[dict], curves: dict[str, list[float]],
                   steps: int, quiet: bool = False) -> None:
    seeds = len(summary[0]["seeds"]) if summary else 1
    cols = [("label", "left"), ("first_loss", "right"), ("final_loss", "right"), ("best_loss", "right"),
            ("steps_to_10pct", "right"), ("mean_grad_norm", "right"), ("mean_update_ratio", "right"),
            ("time_s", "right"), ("steps_per_s", "right")]
    keys = ["first_loss", "final_loss", "best_loss", "steps_to_10pct", "mean_grad_norm", "mean_update_ratio",
            "time_s", "steps_per_s"]
    impl = summary[0].get("implementation") if summary else None
    title = (f"{steps} steps, same initial weights, batches"
             + (f" and {impl} optimizer implementation" if impl else " and optimizer implementation")
             + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""))
    t = _table(title, cols, plain)
    for e in summary:
        cells = []
        for key in keys:
            text = _ms(e, key, seeds)
            if key in e["best_in"]:
                text = f"{text} *" if plain else f"[bold green]{text}[/]"
            cells.append(text)
        t.add_row(e["label"], *cells)
    width = max((len(label) for label in curves), default=0)
    every = [v for vals in curves.values() for v in _positive(vals)] or [1.0]
    lo, hi = min(every), max(every)
    spark = Text(f"loss curves (log scale, shared: ▁ {fmt(lo)} … █ {fmt(hi)}):\n"
                 + "\n".join(f"{label:<{width}}  {sparkline(vals, lo=lo, hi=hi)}" for label, vals in curves.items()))
    diverged = [f"{e['label']} diverged at step {', '.join(str(d['step']) for d in e['diverged'])}"
                + (f" (seed {', '.join(str(d['seed']) for d in e['diverged'])})" if seeds > 1 else "")
                for e in summary if e.get("diverged")]
    if diverged:
        t.caption = "; ".join(diverged) + "; its numbers are up to its last finite step"
    notes = Text(("* best in its column. " if plain else "green: best in its column. ")
                 + "steps_to_10pct: first step with loss below 10% of the first; "
                 "mean_update_ratio: mean ‖Δw‖/‖w‖, how big each update really is, relative to the weights.")
    _print_blocks(console, [t] if quiet else [t, spark, notes])


class CompareProgress:
    """One progress bar per optimizer (terminal only)."""

    show_progress = True

    def __init__(self, console: Console, labels: list[str], total: int, enabled: bool):
        self.progress = None
        if enabled and self.show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=console, transient=True)
            self.tasks = {label: self.progress.add_task(label, total=total) for label in labels}
            self.progress.start()

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.tasks[label], completed=done, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# --------------------------------------------------------------------------- find-lr


def render_find_lr(console: Console, plain: bool, r: dict) -> None:
    lrs, smoothed = r["lrs"], r["smoothed_losses"]
    head = Text(f"learning-rate range test: {r['config']}, {r['optimizer']}, lr from {fmt(r['start'])} to "
                f"{fmt(r['end'])} over at most {r['steps']} steps")
    if r["stopped_early"]:
        ran = Text(f"stopped after {len(lrs)} step(s): {r['stop_reason']}")
    else:
        ran = Text(f"ran all {len(lrs)} steps; the loss never passed 4× its minimum (try a larger --end)")
    blocks: list = [head, ran]
    if lrs:
        blocks.append(Text(f"smoothed loss, lr {fmt(lrs[0])} → {fmt(lrs[-1])} (log scale): "
                           f"{sparkline(smoothed, width=min(60, len(smoothed)))}"))
    t = _table("suggestions", [("rule", "left"), ("lr", "right")], plain)
    t.add_row("steepest descent of the smoothed loss", fmt(r["suggested_lr"]) if r["suggested_lr"] else "none")
    t.add_row("the smoothed loss's minimum / 10", fmt(r["min_loss_lr"]) if r["min_loss_lr"] else "none")
    blocks.append(t)
    pick = r["suggested_lr"] or r["min_loss_lr"]
    if pick and r["drop"] < r["clear_drop"]:
        blocks.append(Text(f"the smoothed loss fell only {r['drop']:.0%} below its start: no clear descent, so these "
                           "are guesses from noise; check train's warnings (vanishing gradients?) before the lr",
                           style="" if plain else "bold yellow"))
    if pick:
        blocks.append(Text(f"use it: backprop train --config {r['config']} --set optimizer.lr={pick:.2g}",
                           style="" if plain else "bold"))
    else:
        blocks.append(Text("no suggestion: the loss did not fall; try a smaller --start", style="" if plain else "bold yellow"))
    _print_blocks(console, blocks)

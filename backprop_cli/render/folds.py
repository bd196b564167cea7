"""`train --folds K`: one line per fold, then the mean ± std of every validation metric. No torch."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from backprop_cli.core.records import ALL_METRICS
from backprop_cli.render.console import fmt
from backprop_cli.render.fit import print_blocks

SHOWN = ("loss", *ALL_METRICS)


def fold_line(result: dict, k: int) -> str:
    metrics = ", ".join(f"{key} {fmt(result[key])}" for key in SHOWN if result.get(key) is not None)
    return (f"fold {result['fold']}/{k}: {result['train_rows']} training rows, {result['validation_rows']} held out, "
            f"{result['steps']} step(s): validation {metrics}")


def render_folds(console: Console, plain: bool, cv: dict) -> None:
    k = cv["k"]
    head = Text(f"{k}-fold cross-validation ({'stratified by class, ' if cv['stratified'] else ''}seed {cv['seed']}; "
                "each fold scaled with its own training rows' statistics)")
    lines: list = [head, Text("\n".join(fold_line(f, k) for f in cv["folds"]))]
    mean, std = cv["mean"], cv["std"]
    summary = ", ".join(f"{key} {fmt(mean[key])} ± {fmt(std[key])}" for key in SHOWN
                        if key in mean and mean[key] == mean[key])
    lines.append(Text(f"mean ± std over the {k} folds: {summary}", style="" if plain else "bold"))
    print_blocks(console, lines)


def seed_line(result: dict, k: int) -> str:
    metrics = ", ".join(f"{key} {fmt(result[key])}" for key in SHOWN if result.get(key) is not None)
    where = f"validation {metrics}" if metrics else f"epoch loss {fmt(result['epoch_loss'])}"
    return f"seed {result['seed']}: {result['steps']} step(s): {where}"


def render_seeds(console: Console, plain: bool, rs: dict) -> None:
    k = rs["k"]
    head = Text(f"{k} runs, seeds {rs['runs'][0]['seed']} … {rs['runs'][-1]['seed']} (initial weights and batch order); "
                f"the validation split fixed by seed {rs['split_seed']} (data.split_seed)")
    mean, std = rs["mean"], rs["std"]
    keys = [key for key in (*SHOWN, "epoch_loss") if key in mean and mean[key] == mean[key]]
    summary = ", ".join(f"{key} {fmt(mean[key])} ± {fmt(std[key])}" for key in keys)
    print_blocks(console, [head, Text("\n".join(seed_line(r, k) for r in rs["runs"])),
                           Text(f"mean ± std over the {k} seeds: {summary}", style="" if plain else "bold")])

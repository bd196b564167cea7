"""`backprop tune`: the command (thin). The search is backprop_cli/runs/tune.py, the output
backprop_cli/render/tune.py; the section of the config backprop_cli/config/tune.py.

No torch or Optuna at import (``backprop --help`` stays fast); no ``from __future__ import annotations``
(typer reads the annotations).
"""

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import check_command_outputs, command, load, read_data, single_process
from backprop_cli.cli.options import ConfigOpt, Format, FormatOpt, QuietOpt, SetOpt, ThreadsOpt, WideOpt, examples
from backprop_cli.errors import EXIT_NONFINITE, BackpropError, ConfigError, OutputError
from backprop_cli.limits import MAX_COUNT

TUNE_HELP_WORKERS = ("Worker processes on this machine sharing the storage (at most 32; a journal file by default "
                     "when more than 1). Workers on other machines join with the same --storage and --study.")


@command(epilog=examples(
    "backprop tune --config configs/tune.yaml --trials 4",
    "backprop tune -c configs/tune.yaml --trials 4 --workers 2 --plot tune.png",
    "backprop tune -c configs/tune.yaml --trials 2 --save-best-config best.yaml",
    "backprop tune -c configs/tune.yaml --trials 2 --format json > tune.json"))
def tune(
    config: ConfigOpt,
    set_: SetOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, max=MAX_COUNT, help="Trials to add to the study "
                                                  "(default: tune.trials).", rich_help_panel="Search")] = None,
    workers: Annotated[int, typer.Option("--workers", help=TUNE_HELP_WORKERS, rich_help_panel="Search")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL|PATH", help="Where the study lives: an "
                                                   "Optuna database URL (postgresql://..., mysql://..., "
                                                   "sqlite:///FILE), a .db file, or any other path: a journal file "
                                                   "(default: STUDY.db beside the config).",
                                                   rich_help_panel="Search")] = None,
    study: Annotated[Optional[str], typer.Option("--study", metavar="NAME", help="The study's name (default: the "
                                                 "config file's name); an existing study gets more trials.",
                                                 rich_help_panel="Search")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", help="Start no trial after S "
                                                     "seconds.", rich_help_panel="Search")] = None,
    save_best_config: Annotated[Optional[Path], typer.Option("--save-best-config", metavar="PATH", help="Write the "
                                                             "config of the best trial (.yaml, tune: removed).",
                                                             rich_help_panel="Output")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw Optuna's optimization history and parameter "
                                                 "importances (.png or .svg).", rich_help_panel="Output")] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
    format: FormatOpt = Format.table,
) -> None:
    """Search the config's tune: space with Optuna: each trial is train's run of the config with the
    sampled values, and its value the validation metric of that run.

    The study lives in a storage (SQLite beside the config unless --storage says otherwise): run tune
    again to add trials. Pruned trials stop at an evaluation; a run that diverges is a failed trial and
    the search goes on. Ctrl-C stops after the running trials are recorded.
    """
    single_process("tune")
    from backprop_cli.runs import tune as search
    from backprop_cli.runs import tune_storage as storages

    search.check_workers(workers)
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout: must be a number of seconds greater than 0 (got {timeout:g})")
    cfg = load(config, set_)
    if cfg.tune is None:
        raise ConfigError(f"{config}: no tune: section: say what to search, e.g. tune: {{space: {{optimizer.lr: "
                          "{low: 1.0e-4, high: 0.1, log: true}}}} (docs/tune.md)")
    name = study if study is not None else storages.default_study_name(config)
    storages.check_study_name(name)
    spec = storages.resolve_storage(storage, config, name, workers)
    if save_best_config is not None:
        from backprop_cli.io.paths import check_writable

        check_writable(save_best_config, (".yaml", ".yml"), "config")
    # what tune writes (the plot, the best config, a storage file) is never an input nor another output
    check_command_outputs(cfg, config, {"--plot": plot, "--save-best-config": save_best_config,
                                        "--storage": storages.storage_file(spec)})
    read_data(cfg)  # every data error before a worker starts
    n = trials if trials is not None else cfg.tune.trials
    t = cfg.tune

    from backprop_cli.render.console import make_console, plain_output
    from backprop_cli.render.tune import TuneReport, summary_lines, tune_document

    stream = sys.stderr if format == Format.json else sys.stdout
    report = TuneReport(make_console(stream), plain=plain_output(stream), quiet=quiet, wide=wide)

    def started(existing: int) -> None:
        sofar = f"{existing} trial(s) so far, {n} more" if existing else f"new, {n} trial(s)"
        report.start(f"study {name} in {spec.describe()}: {sofar}",
                     [("metric", f"{t.metric} ({t.direction}), each trial's last evaluation"),
                      ("sampler", f"{t.sampler} (seed {cfg.seed}{', per worker' if workers > 1 else ''})"),
                      ("pruner", t.pruner), ("workers", f"{workers} (in-process)" if workers == 1 else str(workers)),
                      ("space", "; ".join(f"{k} {_space_text(p)}" for k, p in t.space.items()))],
                     list(t.space), t.metric)

    result = search.search(cfg, config, list(set_ or []), spec, name, n, workers=workers, timeout=timeout,
                           threads=threads, on_trial=lambda trial: report.trial(search.trial_row(trial)),
                           on_start=started)
    rows = [search.trial_row(tr) for tr in result.study.get_trials(deepcopy=False)]
    best_trial = search.best_trial(result.study)
    best = search.trial_row(best_trial) if best_trial is not None else None
    reproduce = None
    written = []
    failed = None
    if best is not None:
        sets = " ".join(f"--set {_quote(s)}" for s in (set_ or []))
        reproduce = f"backprop train --config {_quote(str(config))}{' ' + sets if sets else ''} " \
                    f"{search.set_line(best['params'])}"
        if save_best_config is not None:
            header = (f"The best trial ({best['number']}) of study {name} in {spec.shown}: {t.metric} "
                      f"{best['value']!r}.\nWritten by backprop tune from {config}; its tune: section is removed.")
            search.write_best_config(search.best_config_text(config, list(set_ or []), best["params"],
                                                             save_best_config, header), save_best_config)
            written.append(("best config", f"wrote {save_best_config} (tune: removed; train it to reproduce "
                                           f"trial {best['number']})"))
    elif save_best_config is not None:
        written.append(("best config", "not written: no complete trial"))
    if plot is not None:
        from backprop_cli.render.tune import plot_study

        try:  # a figure that cannot be drawn costs only itself: the summary and JSON are shown, then exit 2
            note = plot_study(result.study, plot, f"{config.name}: study {name}, {t.metric} ({t.direction})",
                              t.metric)
            written.append(("plot", f"wrote {plot}" + (f" ({note})" if note else "")))
        except OutputError as e:
            failed = e
            written.append(("plot", "not written: the figure could not be drawn"))
    report.finish(summary_lines(rows, len(result.new), best, t.metric, t.direction, reproduce, written))
    if format == Format.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(tune_document(name, spec.shown, t.metric, t.direction, best, rows)) + "\n")
    if failed is not None and not result.interrupted:
        raise failed
    if result.interrupted:
        raise search.SearchInterrupted(result.interrupted.split(":")[0].removeprefix("interrupted by "))
    if best is None and result.new and all(search.trial_row(tr)["state"] == "failed" for tr in result.new):
        raise BackpropError("no trial completed: every trial failed (see the table); lower the space's "
                            "learning rates or set train.clip_grad_norm", exit_code=EXIT_NONFINITE)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _space_text(p) -> str:
    if p.choices is not None:
        return "in [" + ", ".join(map(str, p.choices)) + "]"
    text = f"{p.low}..{p.high}"
    if p.log:
        text += " log"
    if p.step is not None:
        text += f" step {p.step}"
    return text

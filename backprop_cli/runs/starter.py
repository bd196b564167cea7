"""`backprop init`: a commented starter config, optionally fitted to a CSV file. No torch here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from backprop_cli.errors import BackpropError, DataError, OutputError, shown

TEMPLATE = """\
# backprop config. Run: backprop train --config {path}
# Every key is here, most at its default; a value chosen for this start says so in its comment
# ("chosen (default ...)"), and the sizes and data, which have no default, are filled in. Keys shown
# only in comments are optional. The comments list the values each key takes.
# Check it with: backprop config validate --config {path}   (config show: the config as loaded)

seed: 0                      # integer >= 0: model init and data order
device: auto                 # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision: fp32              # fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
compile: false               # true: torch.compile the model (slow start, faster long runs)

model:
  input_size: {input_size}              # {input_comment}
  hidden_size: {hidden_size}             # units in the hidden layer
                               #   (or hidden_sizes: [64, 32], one entry per hidden layer, instead)
  output_size: {output_size}              # outputs (classes, for cross_entropy)
  activation: {activation}             # relu | tanh | sigmoid | gelu | leaky_relu | identity
                               #   (or a mapping: {{name: leaky_relu, negative_slope: 0.01}};
                               #   gelu: approximate: none | tanh)
  bias: true                   # false: layers without bias
  init: default                # default (torch's) | xavier | kaiming
  init_gain: null              # a number > 0 for xavier/kaiming (null: the activation's gain)
  norm: none                   # none | batch | layer: after each hidden linear layer, before the activation
  dropout: 0.0                 # 0 <= P < 1 after each hidden activation (or a list, one per hidden layer)
  residual: false              # true: a skip around each hidden layer whose input and output widths match

loss: {loss}                    # mse | l1 | huber | smooth_l1 | cross_entropy | bce_with_logits
                               #   (or a mapping: {{name: huber, delta: 1.0, reduction: mean}};
                               #   smooth_l1: beta; cross_entropy: label_smoothing, class_weights
                               #   (auto | [w1, ...]); bce_with_logits: pos_weight (auto | X))

optimizer:
  name: {optimizer}                  # sgd | adam | adamw | rmsprop | adagrad
  lr: {lr}                     # the learning rate
                               # and that optimizer's own options: sgd: momentum, dampening,
                               #   weight_decay, nesterov, maximize; adam | adamw: betas, eps,
                               #   weight_decay, amsgrad, maximize; rmsprop: alpha, eps,
                               #   weight_decay, momentum, centered, maximize; adagrad: lr_decay,
                               #   weight_decay, initial_accumulator_value, eps, maximize

scheduler: none                # none | step (step_size, gamma) | cosine (T_max, eta_min)
                               #   | warmup_cosine (warmup_steps, T_max, eta_min)
                               #   | reduce_on_plateau (factor, patience, min_lr, threshold,
                               #   cooldown; on val_loss, needs data.validation)
                               #   | one_cycle (max_lr, pct_start, anneal_strategy, div_factor,
                               #   final_div_factor)

data:
{data}
  batch_size: {batch_size}               # rows per step (global batch under torchrun)
  shuffle: true                # false: batch k is rows k*B ... (k+1)*B-1
  drop_last: false             # true: leave out each epoch's last, smaller batch
  split_seed: null             # the validation split's seed (null: seed), fixed while train --seeds varies seed
  standardize: {standardize}           # z-score the number inputs with the training rows' mean and std
  standardize_target: {standardize_target}    # regression: z-score the targets too (metrics stay in their units)

train:
  steps: {steps}                   # total optimizer steps (or epochs; neither: 100)
  epochs: {epochs}                   # passes over the training rows (or give steps instead)
  eval_every: null             # evaluate on the validation rows every N steps (null: every epoch)
  early_stopping: null         # {{patience: N, min_delta: 0.0, restore_best: true}}: stop when val_loss
                               #   stops improving, and keep the model of the best evaluation
  log_every: null              # a row every N steps (null: about 20-50 rows)
  clip_grad_norm: null         # a number: clip the total gradient norm
  on_nonfinite: stop           # stop (exit 3) | skip (skip the update, at most max_skips times)
  max_skips: 10
  zero_grad: true              # false (teaching): gradients accumulate across steps

distributed:
  backend: auto                # under torchrun: auto | gloo | nccl

# compare:                     # optional: compare-optimizers' default optimizers
#   optimizers: [sgd, {{name: adam, lr: 0.001}}]
# tune:                        # optional: backprop tune's search: trials, metric, sampler, pruner,
#   space: {{optimizer.lr: {{low: 0.0001, high: 0.1, log: true}}, model.activation: {{choices: [relu, tanh]}}}}
"""

SYNTHETIC = """\
  kind: synthetic              # synthetic | csv
  samples: 256                 # rows of random inputs
  targets: teacher             # random (randn) | teacher (a fixed random net + noise) | classes
  noise: 0.1                   # std of the noise on teacher targets
  validation: null             # a share of the samples held out for evaluation (e.g. 0.2)"""

CSV = """\
  kind: csv                    # synthetic | csv
  path: {path}     # relative to this file's folder (.csv, .tsv, .parquet, .gz text)
{marks}  target: {target}              # the column to predict (or a list of columns)
  features: [{features}]
  columns:                     # each input's type: number | category | binary (init counted the values)
                               #   and its options: encoding, embedding_size, fill, indicator, on_unknown
{columns}
  missing: auto                # empty/NA cells: auto (numbers median, categories a level of their own)
                               #   | error | drop_rows | mean | median | most_frequent (per column too)
  validation: {validation}              # a share of the rows held out (or a file with the same columns)
                               # delimiter, decimal: the file's separators (default: read from the file)"""


MAX_INIT_COLUMNS = 2000  # init writes each column's type and counts: the config stays a few hundred KB that loads
                         # within the config's bounds (config.yamlfile.MAX_NODES values, MAX_CONFIG_BYTES)


def _guess(path: Path, target: Optional[str]) -> dict:
    """Survey a table file: every column's type, the target, regression vs classification, the classes."""
    from backprop_cli.data.labels import order_classes
    from backprop_cli.data.survey import survey_file

    s = survey_file(Path(path), max_columns=MAX_INIT_COLUMNS, too_many=(
        "init lists in a config (a type and counts for each); write the config yourself with data.features "
        "(or leave it out: every column but the target is an input)"))
    where = s.source.where
    if s.rows == 0:
        raise DataError(f"{where}: needs a header row and at least one data row")
    if target is None:
        listed = ", ".join(f"{n} ({c.describe()})" for n, c in s.columns.items())
        raise DataError(f"{where}: choose the column to predict with --target (columns: {listed})")
    if target not in s.header:
        raise DataError(f"{where}: --target {target!r} is not in the header (columns: {', '.join(s.header)})")
    t = s.columns[target]
    inputs = [s.columns[h] for h in s.header if h != target]
    ids = [c.name for c in inputs if c.id_like]
    features = [c for c in inputs if not c.id_like]
    if not features:
        raise DataError(f"{where}: no input columns besides {target!r}" + (f" (left out as ids: {', '.join(ids)})"
                                                                          if ids else ""))
    if t.kind == "number":
        classification = t.integers and 2 <= t.distinct <= 20 and t.distinct < s.rows
    else:
        classification = True
        if t.distinct < 2 or t.distinct > 1000:
            raise DataError(f"{where}: column {target!r} holds text with {t.distinct} distinct values: not a "
                            "class column; choose another with --target")
    classes = order_classes(t.values)[0] if classification else None
    return {"survey": s, "features": features, "target": target, "classification": classification,
            "classes": classes, "rows": s.rows, "missing_target": t.missing, "ids": ids}


def _column_line(c) -> str:
    """``    "island": {type: category}   # 3 distinct, 2 missing``"""
    spec = f"type: {c.kind}"
    note = f"{c.distinct} distinct, {c.missing} missing"
    if c.kind == "category" and c.distinct > 1000:
        spec += ", encoding: embedding"
        note += "; embedded (over 1,000 values for one-hot)"
    elif c.kind == "number" and c.integers and c.distinct <= 20:
        note += "; integers: type: category may fit"
    return f"    {quoted(c.name)}: {{{spec}}}  # {note}"


def _width(features) -> tuple[int, str]:
    nums = sum(1 for c in features if c.kind == "number")
    parts = [f"{nums} number{'s' * (nums != 1)}"] if nums else []
    width = nums
    for c in features:
        if c.kind == "binary":
            width += 1
            parts.append(f"{c.name} (binary)")
        elif c.kind == "category":
            k = 1 if c.distinct > 1000 else c.distinct + (1 if c.missing else 0)
            width += k
            parts.append(f"{c.name} ({k})")
    return width, " + ".join(parts)


RARE_CLASS_SHARE = 0.10  # init suggests loss.class_weights: auto when the smallest class has fewer rows


def _rarest_class(column) -> Optional[tuple[str, float]]:
    """The least frequent value of the target column and its share of the rows with one, from the survey's
    counts (the same for CSV, TSV, Parquet and compressed files); None for fewer than two classes."""
    counts = column.counts
    if len(counts) < 2:
        return None
    name, n = min(counts.items(), key=lambda kv: kv[1])
    return name, n / sum(counts.values())


def quoted(text: str) -> str:
    """A name (a column, a class, a path) as a YAML double-quoted scalar that reads back as the same text:
    JSON's quoting (YAML's double-quoted style is a superset) with every character left as it is but what
    YAML may not hold raw or would read as a line break (controls, DEL, C1, U+2028, format characters),
    which is written as its ``\\uXXXX`` escape. ``price😀`` stays ``"price😀"`` (JSON's ASCII escapes would
    write a surrogate pair, which YAML reads as two lone surrogates, not the column's name). A lone
    surrogate has no UTF-8 spelling, in a YAML file or a header (the readers refuse such a file): refused."""
    bad = next((c for c in text if 0xD800 <= ord(c) < 0xE000), None)
    if bad is not None:
        raise DataError(f"'{shown(text)}': a name with a lone surrogate ({shown(bad)}) cannot be written to a "
                        "UTF-8 config; rename it")
    out = json.dumps(text, ensure_ascii=False)
    if out.isprintable():
        return out
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                   for c in out)


def require_printable(path: Path, role: str, error: type[BackpropError] = OutputError) -> None:
    """Refuse a path with a control or other non-printable character: the starter config quotes its
    own path and the CSV's, and a line break there would end the comment or string it is in and
    write YAML of its own (``backprop init $'a\\nmodel: 1\\n#.yaml'``)."""
    text = str(path)
    bad = next((i for i, c in enumerate(text) if not c.isprintable()), None)
    if bad is not None:
        raise error(f"{role} {text!r}: the path has a control or non-printable character ({text[bad]!r} at "
                    f"position {bad}); choose a name without one")


def starter_config(path: Path, csv_path: Optional[Path] = None, target: Optional[str] = None) -> tuple[str, str]:
    """The text of a starter config for ``path``, and a one-line description of what was guessed."""
    require_printable(path, "init")
    if csv_path is None:
        text = TEMPLATE.format(path=path, input_size=4, input_comment="number of inputs", hidden_size=16, output_size=1, activation="relu",
                               loss="mse", optimizer="sgd", lr="0.01", data=SYNTHETIC, batch_size=32, steps=200,
                               epochs="null", standardize="false",
                               standardize_target="false")
        return _align(text), "synthetic regression data"
    require_printable(csv_path, "--csv", DataError)
    g = _guess(csv_path, target)
    rel = os.path.relpath(csv_path.resolve(), path.resolve().parent)
    src = g["survey"].source
    rows = g["rows"] - g["missing_target"]
    validation = "0.2" if rows >= 50 else "null"
    marks = ""
    if src.format == "text" and src.delimiter != ("\t" if src.path.name.lower().split(".gz")[0].endswith(
            (".tsv", ".tab")) else ","):
        marks += f"  delimiter: {quoted(src.delimiter)}              # sniffed from the file\n"
    if src.format == "text" and src.decimal != ".":
        marks += f"  decimal: {quoted(src.decimal)}                # sniffed: numbers are written 1,5\n"
    features = g["features"]
    data = CSV.format(path=quoted(rel), target=quoted(g["target"]), marks=marks,
                      features=", ".join(quoted(f.name) for f in features),
                      columns="\n".join(_column_line(c) for c in features), validation=validation)
    cls = g["classification"]
    loss = "cross_entropy" if cls else "mse"
    train_rows = rows - round(0.2 * rows) if validation != "null" else rows
    width, how = _width(features)
    text = TEMPLATE.format(
        path=path, input_size="auto", input_comment=f"derived from the data: {how} = {width} inputs",
        hidden_size=32, output_size=len(g["classes"]) if cls else 1,
        activation="relu", loss=loss, optimizer="adam", lr="0.001", data=data,
        batch_size=max(1, min(32, train_rows)), steps="null", epochs=50, standardize="true",
        standardize_target="false" if cls else "true")
    rare = _rarest_class(g["survey"].columns[g["target"]]) if cls else None
    if rare is not None and rare[1] < RARE_CLASS_SHARE:
        text = text.replace("\noptimizer:", f"\n# the smallest class, {quoted(rare[0])}, has {100 * rare[1]:.1f}% of "
                            "the rows: to weigh every class alike, use\n#   loss: {name: cross_entropy, "
                            "class_weights: auto}\n\noptimizer:", 1)
    if cls:
        shown = ", ".join(g["classes"][:6]) + (", …" if len(g["classes"]) > 6 else "")
        what = f"classification: {len(g['classes'])} classes in {g['target']!r} ({shown})"
    else:
        what = f"regression on {g['target']!r} (standardize_target: true)"
    kinds = [c.kind for c in features]
    what += f", {len(features)} inputs ({kinds.count('number')} numbers, {kinds.count('category')} categories, " \
            f"{kinds.count('binary')} binary: {width} model inputs), {g['rows']} rows"
    cells = sum(c.missing for c in features)
    if cells:
        what += f", {cells} missing cells (filled: data.missing: auto)"
    if g["missing_target"]:
        what += f", {g['missing_target']} rows without a target (dropped)"
    if g["ids"]:
        what += f"; left out as ids (every value different): {', '.join(g['ids'])}"
    return _align(text), what


def _mark_chosen(text: str) -> str:
    """Say so in the comment of every value this starter chose that is not the schema's default
    (``lr: 0.01  # chosen; default: 0.001; ...``): the defaults are read from the schema, for the
    optimizer, loss and data kind the text names."""
    import yaml

    from backprop_cli.config import schema

    doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: thousands of columns
    sections = {None: schema.Config, "model": schema.ModelConfig, "train": schema.TrainConfig,
                "distributed": schema.DistributedConfig,
                "data": schema.CsvData if doc["data"]["kind"] == "csv" else schema.SyntheticData,
                "optimizer": _variant(schema.Config, "optimizer", doc["optimizer"]["name"])}
    out, section = [], None
    for line in text.splitlines():
        code, sep, comment = line.partition(" # ")
        indent = len(code) - len(code.lstrip())
        key, colon, value = code.strip().partition(":")
        if code.strip() and not code.lstrip().startswith("#") and colon:
            if indent == 0:
                section = key if not value.strip() else None
            model = None if indent == 0 and section is not None else sections.get(section if indent else None)
            field = model.model_fields.get(key) if model is not None else None
            if section == "optimizer" and key == "name":  # the union's default member, by its name
                field = schema.Config.model_fields["optimizer"]
            if field is not None and not field.is_required() and _has_default(section, key):
                default = _plain(field.get_default(call_default_factory=True))
                if yaml.safe_load(value) != default:
                    shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True,
                                                                           width=1000).strip().removesuffix("...").strip()
                    comment = f"chosen (default {shown})" + (f"; {comment}" if sep else "")
                    line = f"{code} # {comment}"
        out.append(line)
    return "\n".join(out) + "\n"


def _has_default(section, key: str) -> bool:
    """Whether a key's schema default is one to compare with: not the model's sizes nor what says
    which data to read (their null stands for "not given", and the header says they are filled in)."""
    from backprop_cli.config.schema import _DataCommon

    if section == "model":
        return not key.endswith("_size")
    return section != "data" or key in _DataCommon.model_fields


def _variant(model, field: str, name: str):
    """The schema class of a tagged union's member by its name (optimizer: sgd → SGD)."""
    import typing

    def members(tp):
        for arg in typing.get_args(tp) or ():
            yield from members(arg)
        if isinstance(tp, type) and hasattr(tp, "model_fields"):
            yield tp

    return next(m for m in members(model.model_fields[field].annotation)
                if typing.get_args(m.model_fields["name"].annotation) == (name,))


def _plain(value):
    """A default as YAML would write it: a component model by its name (relu, mse, sgd, none)."""
    if hasattr(value, "model_fields"):
        return getattr(value, "name", value)
    return value


def _align(text: str, column: int = 31) -> str:
    """Line the trailing comments up in one column."""
    out = []
    for line in _mark_chosen(text).splitlines():
        code, sep, comment = line.partition(" # ")
        if sep and code.strip() and not code.lstrip().startswith("#"):
            line = f"{code.rstrip():<{column - 1}} # {comment}"
        elif sep and not code.strip():
            line = f"{'':<{column - 1}} # {comment}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_starter(path: Path, text: str, force: bool) -> None:
    """Write the starter config, only once it validates: a failed ``init`` leaves no file."""
    require_printable(path, "init")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; use --force to overwrite it")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    from backprop_cli.io.paths import check_writable
    from backprop_cli.io.atomic import write_atomic

    check_writable(path, (".yaml", ".yml"), "config")
    validate_text(text, path)
    write_atomic(path, lambda f: f.write(text))


def validate_text(text: str, path: Path) -> None:
    """Check config text with the config loader's own rules, as if it were the file ``path`` (ConfigError)."""
    from backprop_cli.config import load_text

    load_text(text, path)

"""Every ``--format json`` document, built here and nowhere else. No torch here.

JSON has no NaN or infinity: :func:`finite` turns them into ``null`` everywhere (as the README says),
and :func:`json_text` refuses to write anything else.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from backprop_cli.core.records import ALL_METRICS


def finite(value: Any) -> Any:
    """A copy of plain data with every non-finite float replaced by None (dicts, lists, tuples; a numpy
    array or number as its lists and Python numbers, but an integer matrix stays an array for
    :func:`json_text`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if _is_numpy(value):
        if _matrix(value):  # an evaluation's confusion matrix: every value finite; json_text writes it a row a line
            return value
        return finite(value.tolist())
    return value


def _matrix(value: Any) -> bool:
    return _is_numpy(value) and value.ndim == 2 and value.dtype.kind in "iub"


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "tolist")


def json_text(doc: Any) -> str:
    """The document, indented; a matrix (a numpy array of two dimensions: a confusion matrix of up to
    limits.MAX_CLASSES classes) one row per line, as json's C encoder writes it, not one number per line
    through its indenting Python encoder (1,000 classes: a second, not half a minute)."""
    import secrets

    rows: list = []
    tag = secrets.token_hex(8)  # no text of the document (a crafted class name) can be the placeholder

    def hold(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: hold(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [hold(v) for v in value]
        if _matrix(value):
            rows.append(value)
            return f"\x00{tag} {len(rows) - 1}\x00"
        return value

    text = json.dumps(finite(hold(doc)), indent=2, allow_nan=False)
    for i, m in enumerate(rows):
        body = ",\n".join(json.dumps(r) for r in m.tolist())
        text = text.replace(json.dumps(f"\x00{tag} {i}\x00"), "[\n" + body + "\n]" if len(m) else "[]", 1)
    return text


def train_document(summary: dict, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> dict:
    """``train --format json``: ``{"status", "reason" (when not done), "summary", "outputs"}``."""
    doc: dict[str, Any] = {"status": status}
    if reason is not None:
        doc["reason"] = reason
    doc["summary"] = finite(summary)
    doc["outputs"] = dict(outputs)
    return doc


GRAD_STAT_KEYS = ("shape", "norm", "mean", "std", "min", "max", "abs_max", "zero_fraction", "grad_to_weight")


def inspect_document(result: dict) -> dict:
    """``inspect-grads --format json`` (gradients as nested lists)."""
    params = {}
    for name, s in result["params"].items():
        g = result["grads"].get(name)
        params[name] = {k: s.get(k) for k in GRAD_STAT_KEYS}
        params[name]["grad"] = None if g is None else g.tolist()
    doc = {"loss": result["loss"], "batch": dict(result["batch"]), "params": params,
           "warnings": list(result["warnings"])}
    clip = result.get("clip")
    if clip is not None:
        doc["clip"] = {"max_norm": clip["max_norm"], "total_norm_before": clip["total_norm_before"],
                       "total_norm_after": clip["total_norm_after"], "clipped": clip["clipped"],
                       "params": {n: {"norm": clip["norms"][n], "grad": g.tolist()} for n, g in clip["grads"].items()}}
    return finite(doc)


def check_document(result: dict) -> dict:
    """``check-grads --format json``."""
    return finite({"loss": result["loss"], "pass": result["pass"],
                   "params": {n: {k: p[k] for k in ("chain_rule", "finite_diff", "pass")}
                              for n, p in result["params"].items()},
                   "problems": list(result.get("problems", []))})


def explain_document(result: dict) -> dict:
    """``explain --format json``."""
    return finite({k: result[k] for k in ("inputs", "forward", "chain_rule", "autograd", "update", "history",
                                          "diverged_at")})


def validate_document(config: str, problems: list[str]) -> dict:
    """``config validate --format json``."""
    return {"config": config, "ok": not problems, "problems": list(problems)}


def compare_document(results: list, summary: list[dict], ranking: Optional[dict] = None) -> dict:
    """``compare-optimizers --format json``: every run (per seed), the summary per optimizer and
    ``ranked_by`` (``val_loss`` with validation data, else ``final_loss``). With validation data each run
    also has ``validation`` (the summary's numbers: of the last evaluation, or the best's with restore_best,
    and best_loss, best_step), ``evaluations`` ([{"step", "val_loss", "val_<metric>", ...}]) and
    ``stopped_early`` (the step early stopping stopped it at, or null)."""
    runs = []
    for r in results:
        m = r.metrics()
        run = {"optimizer": r.optimizer, "label": r.label, "hyperparams": r.hyperparams,
               "implementation": r.implementation, "seed": r.seed, "status": r.status,
               "diverged_at": r.diverged_at, "losses": r.losses, "grad_norms": r.total_grad_norms,
               "final_loss": m["final_loss"], "best_loss": m["best_loss"],
               "steps_to_10pct": m["steps_to_10pct"], "mean_update_ratio": m["mean_update_ratio"],
               "time_s": m["time_s"]}
        if r.task_metric is not None:
            run.update(validation=r.validation, evaluations=r.evaluations, stopped_early=r.stopped_early)
        runs.append(run)
    return finite({"ranked_by": (ranking or {}).get("ranked_by", "final_loss"), "runs": runs, "summary": summary})


def find_lr_document(result: dict) -> dict:
    """``find-lr --format json``: the suggestions (``suggested_lr``: the valley rule, null when the loss never
    fell; ``steepest_lr``; ``lr_min``) and the sweep's learning rates and (raw) losses."""
    return finite({"suggested_lr": result["suggested_lr"], "steepest_lr": result["steepest_lr"],
                   "lr_min": result["lr_min"],
                   "lrs": list(result["lrs"]), "losses": list(result["losses"]),
                   "smoothed_losses": list(result["smoothed_losses"]), "stopped_early": result["stopped_early"]})


def evaluate_document(result: dict) -> dict:
    """``evaluate --format json``: {"checkpoint", "step", "data", "rows", "training_rows" (with --data: how
    many of them the checkpoint's run trained on), "loss", "accuracy", "f1_macro", "roc_auc", "log_loss" |
    "mae", "rmse", "r2", and for classification "classes", "confusion", "per_class"}."""
    keys = ("checkpoint", "step", "data", "rows", "training_rows", "loss", *ALL_METRICS, "classes", "confusion",
            "per_class")
    return finite({k: result[k] for k in keys if k in result})

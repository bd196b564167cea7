"""Loss and metrics of a model over a whole data set: batched forward passes in eval mode under
``torch.inference_mode()``, never a Python loop over rows. Nothing here prints.

- always: ``loss``, the configured loss with reduction ``mean`` over every row (every element for
  regression and bce_with_logits), whatever the training reduction;
- cross_entropy: ``accuracy``, the confusion matrix (rows: true class, columns: predicted) and per-class
  precision, recall, F1 and support; bce_with_logits: ``accuracy`` over every target element (logit > 0
  against target > 0.5) and, per target column, the same counts of the positive class;
- cross_entropy and bce_with_logits also: ``f1_macro`` (the unweighted mean of the per-class F1; for one
  0/1 column the mean over its two classes, for several columns the mean of each column's positive-class F1,
  as scikit-learn's ``f1_score(average="macro")``), ``roc_auc`` (the area under the ROC curve by the rank
  formula, ties counted one half; cross_entropy: one class against the rest with softmax scores, the mean
  over the classes present with both outcomes; bce_with_logits: per column, the mean; NaN when no class has
  both outcomes) and ``log_loss`` (the mean negative log-likelihood of the true labels, −log softmax[y] or
  the binary cross-entropy per element, without label smoothing or class weights);
- regression: ``mae`` (mean |ŷ − y| over every element), ``rmse`` (the square root of the mean squared
  error over every element) and ``r2``, 1 − SS_res/SS_tot per target column, averaged over the columns (a
  column with SS_tot = 0 counts 1 if predicted exactly, else 0), in the original units when the targets
  were standardized.
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from backprop_cli.config import task_of
from backprop_cli.core.records import TASK_METRICS
from backprop_cli.data.tables import Scaling

EVAL_BATCH_ROWS = 65_536


def metric_loss(loss_fn: nn.Module) -> nn.Module:
    """The configured loss, per element (``reduction='none'``): summed, then divided by the count."""
    per = copy.copy(loss_fn)
    per.reduction = "none"
    return per


def _base(model: nn.Module) -> nn.Module:
    base = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(base, "_orig_mod", base)  # torch.compile


def outputs(model: nn.Module, x: torch.Tensor, batch_rows: int = EVAL_BATCH_ROWS) -> torch.Tensor:
    """The model's raw outputs for every row of ``x``, in eval mode, without autograd."""
    model = _base(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model(x[lo:lo + batch_rows]) for lo in range(0, x.shape[0], batch_rows)]
            return torch.cat(parts) if parts else x.new_zeros((0,))
    finally:
        model.train(was_training)


def measure(model: nn.Module, loss_fn: nn.Module, loss_name: str, x: torch.Tensor, y: torch.Tensor, *,
            classes: Optional[list[str]] = None, y_scaling: Optional[Scaling] = None, detail: bool = False,
            batch_rows: int = EVAL_BATCH_ROWS) -> dict:
    """Loss and metrics of ``model`` on (x, y) (see the module's docstring). ``detail``: also the confusion
    matrix and the per-class table (classification). Plain Python numbers."""
    per = metric_loss(loss_fn)
    model_ = _base(model)
    was_training = model_.training
    model_.eval()
    n = x.shape[0]
    acc = _Accumulator(loss_name, classes, y_scaling, y)
    try:
        with torch.inference_mode():
            for lo in range(0, n, batch_rows):
                out = model_(x[lo:lo + batch_rows]).float()
                acc.add(out, y[lo:lo + batch_rows], per)
    finally:
        model_.train(was_training)
    return acc.result(detail)


class _Accumulator:
    """Sums over batches on the device; one read-back at the end."""

    def __init__(self, loss_name: str, classes, y_scaling: Optional[Scaling], y: torch.Tensor):
        self.kind = task_of(loss_name)
        self.classes = classes
        self.dev = y.device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.dev)
        self.count = 0
        self.scale = None
        if y_scaling is not None:
            self.scale = (torch.tensor(y_scaling.mean, dtype=torch.float32, device=self.dev),
                          torch.tensor(y_scaling.std, dtype=torch.float32, device=self.dev))
        if self.kind == "classes":
            k = len(classes) if classes is not None else None
            self.k = k
            self.confusion = None
        elif self.kind == "binary":
            cols = y.shape[1] if y.dim() == 2 else 1
            self.counts = torch.zeros(cols, 4, dtype=torch.float64, device=self.dev)  # tp, fp, fn, tn
        if self.kind != "regression":
            self.nll_sum = torch.zeros((), dtype=torch.float64, device=self.dev)
            self.scores: list[torch.Tensor] = []  # softmax (classes) or sigmoid (binary) per row, for roc_auc
            self.truths: list[torch.Tensor] = []
        else:
            cols = y.shape[1] if y.dim() == 2 else 1
            self.abs_sum = torch.zeros((), dtype=torch.float64, device=self.dev)
            self.shift = None
            self.sum_y = torch.zeros(cols, dtype=torch.float64, device=self.dev)
            self.sum_y2 = torch.zeros(cols, dtype=torch.float64, device=self.dev)
            self.sum_res2 = torch.zeros(cols, dtype=torch.float64, device=self.dev)

    def add(self, out: torch.Tensor, y: torch.Tensor, per: nn.Module) -> None:
        if self.kind == "regression" and self.scale is not None:
            mean, std = self.scale
            out = out * std + mean
            y = y * std + mean
        self.loss_sum += per(out, y).double().sum()
        self.count += y.numel()
        if self.kind == "classes":
            k = self.k or out.shape[1]
            self.k = k
            pred = out.argmax(dim=1)
            c = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k)
            self.confusion = c if self.confusion is None else self.confusion + c
            logp = torch.log_softmax(out.double(), dim=1)
            self.nll_sum -= logp.gather(1, y[:, None]).sum()
            self.scores.append(logp.exp().float())
            self.truths.append(y)
        elif self.kind == "binary":
            pred = out > 0
            truth = y > 0.5
            if pred.dim() == 1:
                pred, truth = pred[:, None], truth[:, None]
            logits = out.double().reshape(truth.shape)
            self.nll_sum += torch.nn.functional.binary_cross_entropy_with_logits(
                logits, truth.double(), reduction="sum")
            self.scores.append(torch.sigmoid(logits).float())
            self.truths.append(truth)
            self.counts += torch.stack([(pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0),
                                        (~pred & ~truth).sum(0)], dim=1).double()
        else:
            y64, out64 = y.double(), out.double()
            if y64.dim() == 1:
                y64, out64 = y64[:, None], out64[:, None]
            if self.shift is None:
                self.shift = y64.mean(dim=0)
            d = y64 - self.shift
            self.sum_y += d.sum(0)
            self.sum_y2 += (d * d).sum(0)
            res = out64 - y64
            self.sum_res2 += (res * res).sum(0)
            self.abs_sum += res.abs().sum()

    def result(self, detail: bool) -> dict:
        rows = self.count
        loss = float(self.loss_sum) / rows if rows else math.nan
        out: dict = {"loss": loss}
        if self.kind == "classes":
            # array sums, not Python loops over a k×k list (k ≤ limits.MAX_CLASSES); the matrix stays an array
            conf = (self.confusion.cpu().numpy() if self.confusion is not None
                    else np.zeros((self.k or 0, self.k or 0), dtype=np.int64))
            k = conf.shape[0]
            total = int(conf.sum())
            tp, predicted, actual = np.diagonal(conf).tolist(), conf.sum(0).tolist(), conf.sum(1).tolist()
            out["accuracy"] = sum(tp) / total if total else math.nan
            per_class = [_prf(name, tp[i], predicted[i] - tp[i], actual[i] - tp[i])
                         for i, name in enumerate(self.classes or [str(i) for i in range(k)])]
            if detail:
                out["classes"] = [row["class"] for row in per_class]
                out["confusion"] = conf  # rows: true class, columns: predicted; JSON writes it as lists
                out["per_class"] = per_class
            out["f1_macro"] = sum(row["f1"] for row in per_class) / k if k and total else math.nan
            out["roc_auc"] = self._auc_one_vs_rest(k)
            out["log_loss"] = float(self.nll_sum) / total if total else math.nan
        elif self.kind == "binary":
            c = self.counts.tolist()
            total = sum(map(sum, c))
            out["accuracy"] = sum(tp + tn for tp, _, _, tn in c) / total if total else math.nan
            if len(c) == 1:  # one 0/1 column: the mean F1 of its two classes
                tp, fp, fn, tn = c[0]
                f1 = [_prf("", tp, fp, fn)["f1"], _prf("", tn, fn, fp)["f1"]]
            else:  # several columns (multi-label): each column's positive-class F1
                f1 = [_prf("", tp, fp, fn)["f1"] for tp, fp, fn, _ in c]
            out["f1_macro"] = sum(f1) / len(f1) if total else math.nan
            out["roc_auc"] = self._auc_columns()
            out["log_loss"] = float(self.nll_sum) / total if total else math.nan
            if detail:
                out["per_class"] = [_prf(f"column {j}", tp, fp, fn) for j, (tp, fp, fn, _) in enumerate(c)]
                if len(c) == 1:
                    tp, fp, fn, tn = c[0]
                    out["classes"] = ["0", "1"]
                    out["confusion"] = np.array([[tn, fp], [fn, tp]], dtype=np.int64)
        else:
            cols = self.sum_y.shape[0]
            n = rows // cols if cols else 0
            out["mae"] = float(self.abs_sum) / rows if rows else math.nan
            out["rmse"] = math.sqrt(float(self.sum_res2.sum()) / rows) if rows else math.nan
            ss_tot = (self.sum_y2 - self.sum_y * self.sum_y / max(n, 1)).tolist()
            ss_res = self.sum_res2.tolist()
            r2 = [(1.0 - r / t) if t > 0 else (1.0 if r == 0 else 0.0) for r, t in zip(ss_res, ss_tot)]
            out["r2"] = sum(r2) / len(r2) if r2 and n else math.nan
        return out

    def _auc_one_vs_rest(self, k: int) -> float:
        if not self.scores:
            return math.nan
        scores, truth = torch.cat(self.scores), torch.cat(self.truths)
        return _mean_finite([roc_auc(scores[:, c], truth == c) for c in range(k)])

    def _auc_columns(self) -> float:
        if not self.scores:
            return math.nan
        scores, truth = torch.cat(self.scores), torch.cat(self.truths)
        return _mean_finite([roc_auc(scores[:, j], truth[:, j]) for j in range(scores.shape[1])])


def _mean_finite(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def roc_auc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """The area under the ROC curve of ``score`` for the rows where ``positive`` is true: the
    Mann-Whitney U statistic over n_pos · n_neg, tied scores given their mean rank (each tie between a
    positive and a negative counts one half). NaN when either outcome is absent."""
    positive = positive.bool()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    sorted_scores, order = torch.sort(score.double())
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each tie group's last member
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = mean_rank[inverse]
    pos_rank_sum = float(ranks[positive[order]].sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _prf(name: str, tp: float, fp: float, fn: float) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(tp + fn)}


def metric_keys(loss_name: str) -> tuple[str, ...]:
    """The metrics besides the loss, by task (backprop_cli.core.records.TASK_METRICS)."""
    return TASK_METRICS[task_of(loss_name)]


def evaluation_record(val: dict, train: dict, loss_name: str) -> dict:
    """The keys an evaluation step's record carries: val_loss and val_ of each metric of the task
    (accuracy, f1_macro, roc_auc, log_loss | mae, rmse, r2), and the same for the training rows
    (train_loss, ...)."""
    keys = ("loss", *metric_keys(loss_name))
    out = {f"val_{k}": val[k] for k in keys}
    out.update({f"train_{k}": train[k] for k in keys})
    return out

"""Class labels: how a label is named, the classes in order, and labels as class indices.

A label is its text, stripped (the readers strip every text cell), except that a label that reads as a
finite number is named by its value: integers as integers (``1``, ``1.0``, ``01`` and ``1e0`` are the class
``1``), other numbers by Python's shortest repr (``0.50`` is ``0.5``). A label that reads as a number but
not a finite one (``inf``, ``-Infinity``; ``nan`` and ``NaN`` are missing cells) is an error naming its line.
The classes are sorted by value when every one is a number, otherwise as text. A column has at most
:data:`backprop_cli.limits.MAX_CLASSES` classes.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from backprop_cli.limits import MAX_CLASSES


def _number(text: str) -> Optional[float]:
    """The label's value if it reads as a number (finite or not), else None."""
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def _label_key(text: str) -> Optional[float]:
    v = _number(text)
    return v if v is not None and math.isfinite(v) else None


def class_name(text: str) -> str:
    """How a label is named: a finite number by its value (``1.0`` and ``1`` are the class ``1``, ``0.50`` is
    ``0.5``), any other text as written."""
    v = _label_key(text)
    if v is None:
        return text
    if v == int(v):
        return str(int(v))
    return repr(v)


def order_classes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct classes of some label texts, and where each text goes (index into the classes).

    Each text named by :func:`class_name`; all numbers: sorted by value, otherwise sorted as text."""
    names = [class_name(v) for v in values]
    keys = [_label_key(n) for n in names]
    if all(k is not None for k in keys):
        distinct = [n for _, n in sorted({(k, n) for k, n in zip(keys, names)})]
    else:
        distinct = sorted(set(names))
    index = {name: i for i, name in enumerate(distinct)}
    return distinct, np.array([index[n] for n in names], dtype=np.int64)


def labels_to_classes(labels, src, column: str, known: Optional[list[str]] = None,
                      rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, list[str]]:
    """Class indices of a label column (a readers.Text without missing cells), and the class names.
    ``known``: the classes a model was trained on (evaluate); a label outside them is an error naming its line.
    ``rows``: the file's row of each label (they are a subset of the file's rows), for the line of an error."""
    from backprop_cli.errors import DataError

    def at(j: int) -> str:
        present = labels.codes == j
        if not present.any():
            return ""
        row = int(np.argmax(present))
        return src.at(int(rows[row]) if rows is not None else row)

    present = np.flatnonzero(np.bincount(labels.codes, minlength=len(labels.values))) if len(labels.codes) else \
        np.zeros(0, dtype=np.int64)  # the values these rows hold (a subset's Text keeps the column's values)
    for j in present:
        text = labels.values[j]
        v = _number(text)
        if v is not None and not math.isfinite(v):
            raise DataError(f"{src.where}{at(j)}: column {column!r}: label {text!r} is not a finite number (a class "
                            "label is a text or a finite number; leave the cell empty for a row without a label)")
    if known is None:
        texts = [labels.values[i] for i in present]
        if len(texts) > MAX_CLASSES and len({class_name(t) for t in texts}) > MAX_CLASSES:
            count = len({class_name(t) for t in texts})
            raise DataError(f"{src.where}: column {column!r}: {count:,} classes, more than the {MAX_CLASSES:,} a "
                            "classification may have (every evaluation counts a classes × classes confusion "
                            "matrix); is it a class column? (a regression loss such as mse reads it as numbers)")
        names, order = order_classes(texts)
        remap = np.zeros(len(labels.values), dtype=np.int64)
        remap[present] = order
        return remap[labels.codes] if len(remap) else np.zeros(0, dtype=np.int64), names
    index = {name: i for i, name in enumerate(known)}
    remap = np.zeros(len(labels.values), dtype=np.int64)
    for j in present:
        text = labels.values[j]
        name = text if text in index else class_name(text)  # as written first: a checkpoint's older names
        if name not in index:
            raise DataError(f"{src.where}{at(j)}: column {column!r}: class {text!r} is not one the model was trained "
                            f"on (classes: {', '.join(known[:20])}{', …' if len(known) > 20 else ''})")
        remap[j] = index[name]
    return remap[labels.codes] if len(remap) else np.zeros(0, dtype=np.int64), list(known)

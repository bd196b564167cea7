"""Class labels: how a label is named, the classes in order, and labels as class indices."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _label_key(text: str) -> Optional[float]:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def class_name(text: str) -> str:
    """How a label is named: integers as integers (``1.0`` and ``1`` are the class ``1``), others as written."""
    v = _label_key(text)
    if v is not None and v == int(v):
        return str(int(v))
    return text


def order_classes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct classes of some label texts, and where each text goes (index into the classes).

    All numbers: sorted by value, equal values one class (``1`` and ``1.0``); otherwise sorted as text."""
    keys = [_label_key(v) for v in values]
    numeric = all(k is not None for k in keys)
    names = [class_name(v) for v in values] if numeric else list(values)
    if numeric:
        order = sorted(set(zip(keys, names)), key=lambda kn: kn[0])
        distinct = list(dict.fromkeys(name for _, name in order))
    else:
        distinct = sorted(set(names))
    index = {name: i for i, name in enumerate(distinct)}
    return distinct, np.array([index[n] for n in names], dtype=np.int64)


def labels_to_classes(labels, src, column: str, known: Optional[list[str]] = None) -> tuple[np.ndarray, list[str]]:
    """Class indices of a label column (a readers.Text without missing cells), and the class names.
    ``known``: the classes a model was trained on (evaluate); a label outside them is an error naming its line."""
    from backprop_cli.errors import DataError

    if known is None:
        present = np.flatnonzero(np.bincount(labels.codes, minlength=len(labels.values)))
        names, order = order_classes([labels.values[i] for i in present])
        remap = np.zeros(len(labels.values), dtype=np.int64)
        remap[present] = order
        return remap[labels.codes] if len(remap) else np.zeros(0, dtype=np.int64), names
    index = {name: i for i, name in enumerate(known)}
    remap = np.empty(len(labels.values), dtype=np.int64)
    for j, text in enumerate(labels.values):
        name = class_name(text)
        if name not in index:
            present = labels.codes == j
            at = src.at(int(np.argmax(present))) if present.any() else ""
            raise DataError(f"{src.where}{at}: column {column!r}: class {text!r} is not one the model was trained on "
                            f"(classes: {', '.join(known)})")
        remap[j] = index[name]
    return remap[labels.codes] if len(remap) else np.zeros(0, dtype=np.int64), list(known)

"""Synthetic and CSV data, checked against the model, served as batches already on the device.

Two stages: :func:`read_table` reads and checks the data as numpy arrays without importing torch (so
every data error is reported fast, before torch loads); :func:`load_dataset` turns them into tensors.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backprop_cli.config import CLASSIFICATION_LOSSES, Config, CsvData, SyntheticData
from backprop_cli.errors import DataError

if TYPE_CHECKING:
    import torch

TEACHER_HIDDEN = 32


@dataclass
class Table:
    """Data as read, before torch: ``x`` (samples, features) float32; ``y`` (samples, outputs) float32, or
    (samples,) int64 class labels for cross_entropy."""

    x: np.ndarray
    y: np.ndarray
    source: str
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.x.shape[0]


@dataclass
class Dataset:
    """The data as tensors on the CPU; :meth:`on` gives (and keeps) a copy on a device."""

    x: Any  # torch.Tensor (samples, features), float32
    y: Any  # torch.Tensor (samples, outputs) float32, or (samples,) int64 class labels
    source: str
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    _on: dict = field(default_factory=dict, repr=False)

    @property
    def samples(self) -> int:
        return self.x.shape[0]

    def on(self, device) -> tuple:
        """(x, y) on ``device``, copied there once."""
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.x.to(device), self.y.to(device))
        return self._on[key]


# --------------------------------------------------------------------------- synthetic


def synthetic(spec: SyntheticData, input_size: int, output_size: int, seed: int,
              loss: str = "mse") -> Table:
    """Seeded synthetic data from its own ``torch.Generator`` (independent of the model's init).

    ``random``: ``randn(samples, input_size)`` inputs and ``randn(samples, output_size)`` targets.
    ``teacher``: targets from a fixed random tanh network plus Gaussian noise, so the loss can fall.
    ``classes``: the teacher's (noisy) logits turned into class labels (argmax) for cross_entropy,
    or into 0/1 targets (logit > 0) for bce_with_logits.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    n = spec.samples
    x = torch.randn(n, input_size, generator=g)
    if spec.targets == "random":
        y = torch.randn(n, output_size, generator=g)
    else:
        w1 = torch.randn(input_size, TEACHER_HIDDEN, generator=g) / math.sqrt(input_size)
        w2 = torch.randn(TEACHER_HIDDEN, output_size, generator=g) * (2.0 / math.sqrt(TEACHER_HIDDEN))
        y = torch.tanh(x @ w1) @ w2 + spec.noise * torch.randn(n, output_size, generator=g)
        if spec.targets == "classes":
            y = y.argmax(dim=1) if loss == "cross_entropy" else (y > 0).float()
    return Table(x.numpy(), y.numpy(), f"synthetic ({spec.targets})",
                 [f"x{i}" for i in range(input_size)], [f"y{i}" for i in range(output_size)])


# --------------------------------------------------------------------------- CSV


def display_path(path: Path) -> str:
    """The path as the user would write it: relative to the current folder when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_csv(path: Path, spec: CsvData, loss: str = "mse") -> Table:
    """Read a CSV with a header row. Every problem names the file, the line and the column."""
    where = display_path(path)
    if not path.exists():
        raise DataError(f"{where}: no such file (data.path)")
    if path.is_dir():
        raise DataError(f"{where}: is a directory, not a CSV file (data.path)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(_rows(csv.reader(f), where))
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{where}: malformed CSV: {e}") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror or e}") from None
    if not rows:
        raise DataError(f"{where}: empty file; expected a header row and data rows")
    (_, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(f"{where}:1: the header has an empty column name")
        if name in seen:
            raise DataError(f"{where}:1: column {name!r} appears twice in the header")
        seen.add(name)
    targets = spec.target_columns
    features = spec.features if spec.features is not None else [h for h in header if h not in targets]
    for key, names in (("data.target", targets), ("data.features", features)):
        for name in names:
            if name not in seen:
                hint = ""
                if len(header) == 1 and (sep := next((c for c in ";\t|" if c in header[0]), None)):
                    hint = f"; the file seems to separate columns with {sep!r}: backprop reads comma-separated values"
                raise DataError(f"{where}: {key}: column {name!r} is not in the header "
                                f"(columns: {', '.join(header)}){hint}")
    overlap = sorted(set(targets) & set(features))
    if overlap:
        raise DataError(f"{where}: data.features: column {overlap[0]!r} is also a target")
    if not features:
        raise DataError(f"{where}: data.features: no feature columns left besides the target")
    if not body:
        raise DataError(f"{where}: no data rows after the header")
    col = {name: i for i, name in enumerate(header)}
    fidx, tidx = [col[n] for n in features], [col[n] for n in targets]
    xs, ys = [], []
    for line, cells in body:
        if len(cells) != len(header):
            raise DataError(f"{where}:{line}: row has {len(cells)} cells, the header has {len(header)}")
        xs.append([_number(cells[i], where, line, header[i]) for i in fidx])
        ys.append([_number(cells[i], where, line, header[i]) for i in tidx])
    x = np.array(xs, dtype=np.float32).reshape(len(xs), len(fidx))
    if loss == "cross_entropy":
        if len(targets) != 1:
            raise DataError(f"{where}: data.target: cross_entropy takes one column of class labels (got {len(targets)})")
        for (line, _), (v,) in zip(body, ys):
            if v != int(v) or v < 0:
                raise DataError(f"{where}:{line}: column {targets[0]!r}: class labels must be integers >= 0 (got {v:g})")
        y = np.array([int(v) for (v,) in ys], dtype=np.int64)
    else:
        y = np.array(ys, dtype=np.float32).reshape(len(ys), len(tidx))
    return Table(x, y, where, list(features), list(targets))


def _rows(reader, where: str):
    for cells in reader:
        if cells and any(c.strip() for c in cells):  # skip blank lines
            yield reader.line_num, cells


def _number(cell: str, where: str, line: int, column: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise DataError(f"{where}:{line}: column {column!r}: not a number (got {cell.strip()!r})") from None
    if not math.isfinite(v):
        raise DataError(f"{where}:{line}: column {column!r}: not a finite number (got {cell.strip()!r})")
    return v


# --------------------------------------------------------------------------- checks and batches


def read_table(cfg: Config) -> Table:
    """The configured data, read and checked against the model and the loss (CSV: no torch)."""
    loss = cfg.loss.name
    if isinstance(cfg.data, SyntheticData):
        table = synthetic(cfg.data, cfg.model.input_size, cfg.model.output_size, cfg.seed, loss)
    else:
        table = load_csv(cfg.data_path(), cfg.data, loss)
    check_fits(cfg, table)
    return table


def load_dataset(cfg: Config, table: Table | None = None) -> Dataset:
    """The configured data as tensors (from ``table`` when it was read already)."""
    import torch

    t = table if table is not None else read_table(cfg)
    return Dataset(torch.from_numpy(t.x), torch.from_numpy(t.y), t.source, t.feature_names, t.target_names)


def check_fits(cfg: Config, ds: Table) -> None:
    """Shapes and target values against the model and the loss, with what to change."""
    m, loss = cfg.model, cfg.loss.name
    nfeat = ds.x.shape[1]
    if nfeat != m.input_size:
        raise DataError(f"{ds.source}: the data has {nfeat} feature columns but model.input_size is "
                        f"{m.input_size}; set model.input_size: {nfeat}")
    if loss == "cross_entropy":
        top = int(ds.y.max())
        if top >= m.output_size:
            raise DataError(f"{ds.source}: class labels go up to {top} but model.output_size is "
                            f"{m.output_size}; set model.output_size: {top + 1}")
    else:
        nout = ds.y.shape[1]
        if nout != m.output_size:
            raise DataError(f"{ds.source}: the data has {nout} target columns but model.output_size is "
                            f"{m.output_size}; set model.output_size: {nout}")
        if loss == "bce_with_logits" and bool(((ds.y < 0) | (ds.y > 1)).any()):
            raise DataError(f"{ds.source}: bce_with_logits needs targets between 0 and 1")
    if cfg.data.batch_size > ds.samples:
        raise DataError(f"{ds.source}: data.batch_size ({cfg.data.batch_size}) is larger than the "
                        f"{ds.samples} samples; lower data.batch_size")
    if loss not in CLASSIFICATION_LOSSES and ds.y.dtype != np.float32:
        raise DataError(f"{ds.source}: loss {loss} needs real-valued targets")


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class Batches:
    """Batch ``k`` of the run, from tensors already on the device.

    Each epoch is one pass over the data in order (``shuffle: false``: batch k is rows k·B … (k+1)·B−1,
    the last batch may be smaller) or in a seeded permutation that depends only on (seed, epoch), so any
    step's batch can be recomputed, e.g. on resume.

    When one batch holds the whole data set, every step is an epoch: the permutations of the next
    epochs are drawn together and their rows gathered in one go (8 epochs first, twice as many each
    time after, up to :data:`PREFETCH_ELEMENTS` gathered elements), so a step only takes a view. The
    order is exactly the one epoch by epoch would give.
    """

    PREFETCH_ELEMENTS = 1 << 18  # gathered elements (x and y) per prefetch of whole-data epochs

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.samples = x.shape[0]
        self.per_epoch = math.ceil(self.samples / batch_size)
        self._epoch = -1
        self._ex, self._ey = x, y
        row = max(1, x[:1].numel() + y[:1].numel())
        self._most = max(1, self.PREFETCH_ELEMENTS // (row * self.samples))  # epochs per prefetch, at most
        self._ahead = 4
        self._first, self._xs, self._ys = 0, (), ()  # prefetched whole-data epochs _first, _first + 1, ...
        self._generator = None

    def order(self, epoch: int):
        import torch

        if self._generator is None:
            self._generator = torch.Generator()
        return torch.randperm(self.samples, generator=self._generator.manual_seed(epoch_seed(self.seed, epoch)))

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch used by step ``index + 1`` (index counts from 0)."""
        if self.per_epoch == 1:
            if not self.shuffle:
                return self.x, self.y
            j = index - self._first
            if not 0 <= j < len(self._xs):
                self._prefetch(index)
                j = 0
            return self._xs[j], self._ys[j]
        epoch, k = divmod(index, self.per_epoch)
        if self.shuffle and epoch != self._epoch:
            perm = _to_device(self.order(epoch), self.x.device)
            self._ex, self._ey, self._epoch = self.x[perm], self.y[perm], epoch
        lo = k * self.batch_size
        return self._ex[lo:lo + self.batch_size], self._ey[lo:lo + self.batch_size]

    def _prefetch(self, first: int) -> None:
        """Whole-data epochs ``first … first + _ahead − 1``: one gather of x and y for all of them."""
        import torch

        self._ahead = min(2 * self._ahead, self._most)
        perms = torch.cat([self.order(e) for e in range(first, first + self._ahead)])
        perms = _to_device(perms, self.x.device)
        xs = self.x[perms].view(self._ahead, self.samples, *self.x.shape[1:])
        ys = self.y[perms].view(self._ahead, self.samples, *self.y.shape[1:])
        self._first, self._xs, self._ys = first, xs.unbind(0), ys.unbind(0)


def _to_device(t, device):
    """A host tensor on ``device``. To CUDA it goes from pinned memory without blocking: a plain copy
    from pageable memory would make the host wait for the device (a sync at every epoch start)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

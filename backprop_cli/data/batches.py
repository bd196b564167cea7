"""Batches of the run, from tensors already on the device; epoch seeds (resume recomputes any step's batch)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def batches_per_epoch(samples: int, batch_size: int, drop_last: bool = False) -> int:
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)


class Batches:
    """Batch ``k`` of the run, from tensors already on the device.

    Each epoch is one pass over the data in order (``shuffle: false``: batch k is rows k·B … (k+1)·B−1,
    the last batch may be smaller, or is left out with ``drop_last``) or in a seeded permutation that
    depends only on (seed, epoch), so any step's batch can be recomputed, e.g. on resume.

    When one batch holds the whole data set, every step is an epoch: the permutations of the next
    epochs are drawn together and their rows gathered in one go (8 epochs first, twice as many each
    time after, up to :data:`PREFETCH_ELEMENTS` gathered elements), so a step only takes a view. The
    order is exactly the one epoch by epoch would give.
    """

    PREFETCH_ELEMENTS = 1 << 18  # gathered elements (x and y) per prefetch of whole-data epochs

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.samples = x.shape[0]
        self.per_epoch = batches_per_epoch(self.samples, batch_size, drop_last)
        self._epoch = -1
        self._ex, self._ey = x, y
        row = max(1, x[:1].numel() + y[:1].numel())
        self._most = max(1, self.PREFETCH_ELEMENTS // (row * self.samples))  # epochs per prefetch, at most
        self._ahead = 4
        self._first, self._xs, self._ys = 0, (), ()  # prefetched whole-data epochs _first, _first + 1, ...
        self._generator = None

    def rows(self, k: int) -> int:
        """Rows in batch ``k`` of an epoch (from 0)."""
        return min(self.batch_size, self.samples - k * self.batch_size)

    def order(self, epoch: int):
        import torch

        if self._generator is None:
            self._generator = torch.Generator()
        return torch.randperm(self.samples, generator=self._generator.manual_seed(epoch_seed(self.seed, epoch)))

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch used by step ``index + 1`` (index counts from 0)."""
        if self.per_epoch == 1 and self.batch_size >= self.samples:  # one batch is the whole data set
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

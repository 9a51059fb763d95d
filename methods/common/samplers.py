"""Index samplers for the balanced training batches of DevNet and DRA (methods.md §1.3, §2).

Both released codes draw every batch as a fixed number of "normal slots" taken from an
endless stream over the normal training images, and the remaining slots from an endless
stream over the labelled anomalies. Each stream is a chain of fresh random permutations (no
replacement within a pass; a pass may end mid-batch and the next permutation continues),
and the streams persist across epochs. DevNet: normal_slots = batch_size // 2 (24 of 48);
DRA: 2·batch_size // 3 (32 of 48). Randomness comes from an explicit numpy RandomState.
"""
from __future__ import annotations

import numpy as np


class EndlessPermutation:
    """Endless stream over ``range(n)``: a chain of fresh permutations drawn from ``rng``.

    ``take(k)`` returns the next k indices; the position persists across calls, so over
    consecutive calls every index is used once per pass."""

    def __init__(self, n: int, rng: np.random.RandomState):
        if n < 1:
            raise ValueError(f"EndlessPermutation needs n ≥ 1 items, got {n!r}")
        self.n = int(n)
        self.rng = rng
        self._perm = np.empty(0, dtype=np.int64)
        self._pos = 0

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` indices (int64 array)."""
        if k < 0:
            raise ValueError(f"take(k) needs k ≥ 0, got {k!r}")
        out = np.empty(k, dtype=np.int64)
        filled = 0
        while filled < k:
            if self._pos >= len(self._perm):
                self._perm = self.rng.permutation(self.n).astype(np.int64)
                self._pos = 0
            m = min(k - filled, len(self._perm) - self._pos)
            out[filled:filled + m] = self._perm[self._pos:self._pos + m]
            filled += m
            self._pos += m
        return out


class BalancedBatchSampler:
    """Batches of ``normal_slots`` normal indices plus ``batch_size − normal_slots`` labelled
    anomaly indices, each from its own :class:`EndlessPermutation` (same ``rng``).

    With one labelled anomaly it fills every anomaly slot; with more, each batch holds a block
    of the anomaly stream, so usage is balanced only over consecutive batches."""

    def __init__(self, n_normal: int, n_anomalies: int, batch_size: int, normal_slots: int,
                 rng: np.random.RandomState):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size!r}")
        if not 0 <= normal_slots <= batch_size:
            raise ValueError(f"normal_slots={normal_slots!r} must be within [0, batch_size="
                             f"{batch_size}]")
        self.batch_size = int(batch_size)
        self.normal_slots = int(normal_slots)
        self.anomaly_slots = self.batch_size - self.normal_slots
        if self.normal_slots and n_normal < 1:
            raise ValueError("the balanced sampler needs at least one normal training image")
        if self.anomaly_slots and n_anomalies < 1:
            raise ValueError(f"the balanced sampler has {self.anomaly_slots} anomaly slots per "
                             f"batch but no labelled anomalies (n_anomalies={n_anomalies}); "
                             f"this method needs shots ≥ 1")
        self._normal = EndlessPermutation(n_normal, rng) if self.normal_slots else None
        self._anomaly = EndlessPermutation(n_anomalies, rng) if self.anomaly_slots else None

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(normal indices, anomaly indices) of the next batch."""
        normal = self._normal.take(self.normal_slots) if self._normal else \
            np.empty(0, dtype=np.int64)
        anomaly = self._anomaly.take(self.anomaly_slots) if self._anomaly else \
            np.empty(0, dtype=np.int64)
        return normal, anomaly

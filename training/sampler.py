"""Endless, rank-sharded data order that can restart at any position in O(1).

Upstream's InfiniteSampler reshuffles incrementally, so its position after N images can only be
reached by replaying all N steps. Here the global stream is a sequence of epochs, each an
independent permutation seeded by (seed, epoch); rank r takes every num_replicas-th element
starting at r. Resuming at `start` (images this rank has consumed) reproduces the order exactly.
"""

from __future__ import annotations

import numpy as np
import torch

#----------------------------------------------------------------------------
# Global position g -> dataset index: permutation of epoch g // n, seeded by (seed, epoch).

class ResumableSampler(torch.utils.data.Sampler):
    def __init__(self, dataset,
        rank:           int = 0,    # This process's rank.
        num_replicas:   int = 1,    # World size.
        seed:           int = 0,    # Data-order seed (same on every rank).
        start:          int = 0,    # Number of indices this rank has already consumed.
    ):
        if len(dataset) == 0:
            raise ValueError('ResumableSampler: the dataset is empty; check --data')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'ResumableSampler: rank {rank} is not in [0, {num_replicas})')
        super().__init__()
        self.size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.seed = seed
        self.start = start

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self):
        pos = self.start * self.num_replicas + self.rank
        epoch, order = -1, None
        while True:
            if pos // self.size != epoch:
                epoch = pos // self.size
                order = self._epoch_order(epoch)
            yield int(order[pos % self.size])
            pos += self.num_replicas

#----------------------------------------------------------------------------

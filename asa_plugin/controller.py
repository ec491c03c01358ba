"""Adaptive probability controller of ADA (Karras et al. 2020, Sec. 3): p follows r_t = E[sign(D(real))].

Shared by every method that adapts a probability to the discriminator's overfitting (ADA, APA).
The controller is fed explicitly (``observe``) instead of through a global stats channel, and its
whole state is plain data so that snapshots and exact resume can carry it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

#----------------------------------------------------------------------------
# The update rule (ADA paper Sec. 3; upstream training_loop): one step of size
# batch_size * interval / (kimg * 1000) towards more augmentation when r_t > target.
# p is clamped below at 0 but NOT above: upstream lets p exceed 1 (every op then
# always fires, except arbitrary rotation whose probability saturates at 1).

def ada_p_update(p: float, r_t: float, target: float, batch_size: int, interval: int, kimg: float) -> float:
    """Return the new p given the mean real-logit sign ``r_t`` since the last update."""
    if math.isnan(r_t):  # Nothing observed: keep p (upstream would turn p into NaN).
        return p
    direction = (r_t > target) - (r_t < target)  # sign(r_t - target), 0 when equal.
    adjust = direction * (batch_size * interval) / (kimg * 1000)
    return max(p + adjust, 0.0)

#----------------------------------------------------------------------------
# Accumulates sign(D(real)) and steps p every `interval` calls of step().

class AdaptiveP:
    def __init__(self,
        target:     float = 0.6,    # Desired r_t = E[sign(D(real))], in (0, 1).
        interval:   int   = 4,      # Update p every this many iterations (step() calls).
        kimg:       float = 500,    # p can move by 1 per this many thousand real images.
        batch_size: Optional[int] = None, # Total batch over all ranks; None = must be passed to step().
        p:          float = 0.0,    # Initial probability.
    ):
        if not 0 < target < 1:
            raise ValueError(f'AdaptiveP: target={target} is out of range; use a value in (0, 1)')
        if int(interval) != interval or interval < 1:
            raise ValueError(f'AdaptiveP: interval={interval} is invalid; use an integer >= 1')
        if not kimg > 0:
            raise ValueError(f'AdaptiveP: kimg={kimg} is invalid; use a positive number')
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f'AdaptiveP: batch_size={batch_size} is invalid; use an integer >= 1')
        if not p >= 0:
            raise ValueError(f'AdaptiveP: p={p} is invalid; use a value >= 0')
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.p = float(p)
        self.num_calls = 0          # step() calls since the last update.
        self.last_r_t = math.nan    # r_t used by the last update, for logging.
        self._signs = None          # float64 tensor [sum of signs, count] on the logits' device.

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) of one real pass (raw logits, any shape). No host sync."""
        logits = real_logits.detach().flatten().to(torch.float64)
        count = torch.full([], float(logits.numel()), dtype=torch.float64, device=logits.device)
        moments = torch.stack([logits.sign().sum(), count])
        self._signs = moments if self._signs is None else self._signs + moments.to(self._signs.device)

    def pending(self) -> tuple:
        """(sum of signs, count) observed locally since the last update."""
        if self._signs is None:
            return 0.0, 0.0
        s, n = self._signs.tolist()
        return s, n

    def step(self, batch_size: Optional[int] = None) -> float:
        """Call once per iteration on every rank; updates p every ``interval`` calls. Returns p."""
        self.num_calls += 1
        if self.num_calls < self.interval:
            return self.p
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size is None:
            raise ValueError('AdaptiveP.step: batch_size is unknown; pass it to step() or to the constructor')
        total, count = self._reduce_signs()
        self.last_r_t = total / count if count > 0 else math.nan
        self.p = ada_p_update(self.p, self.last_r_t, self.target, batch_size, self.interval, self.kimg)
        self.num_calls = 0
        self._signs = None
        return self.p

    def _reduce_signs(self) -> tuple:
        # Sum [signs, count] over ranks, like upstream's training_stats.Collector does at update().
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return self.pending()
        nccl = torch.distributed.get_backend() == 'nccl'
        device = torch.device('cuda', torch.cuda.current_device()) if nccl else torch.device('cpu')
        # A rank that saw nothing must still join the collective.
        moments = torch.zeros(2, dtype=torch.float64, device=device)
        if self._signs is not None:
            moments += self._signs.to(device)
        torch.distributed.all_reduce(moments)
        s, n = moments.tolist()
        return s, n

    def state_dict(self) -> dict:
        """Plain data. The pending signs are this rank's; under DDP other ranks restore rank 0's."""
        s, n = self.pending()
        return dict(p=self.p, target=self.target, interval=self.interval, kimg=self.kimg,
                    batch_size=self.batch_size, num_calls=self.num_calls, last_r_t=self.last_r_t,
                    pending_sum=s, pending_count=n)

    def load_state_dict(self, state: dict) -> None:
        missing = {'p', 'num_calls'} - set(state)
        if missing:
            raise KeyError(f'AdaptiveP.load_state_dict: state lacks {sorted(missing)}; pass what state_dict() returned')
        self.p = float(state['p'])
        for key in ('target', 'kimg'):
            if key in state:
                setattr(self, key, float(state[key]))
        if 'interval' in state:
            self.interval = int(state['interval'])
        if state.get('batch_size') is not None:
            self.batch_size = int(state['batch_size'])
        self.num_calls = int(state['num_calls'])
        self.last_r_t = float(state.get('last_r_t', math.nan))
        n = float(state.get('pending_count', 0.0))
        self._signs = torch.tensor([float(state.get('pending_sum', 0.0)), n], dtype=torch.float64) if n > 0 else None

    def __repr__(self) -> str:
        return f'AdaptiveP(p={self.p:.4f}, target={self.target}, interval={self.interval}, kimg={self.kimg:g})'

#----------------------------------------------------------------------------

"""Guard against NaN/Inf in a phase's loss or gradients: report, then skip the step or stop.

Upstream silently replaces NaN gradients by zero (nan_to_num) and steps anyway, so a run can
degrade for days unnoticed. Here every non-finite step is reported with its phase and step,
counted (stats.jsonl `Nonfinite/*`), and either skipped (default) or turned into an error.
The decision is taken jointly by all ranks so that they never diverge.
"""

from __future__ import annotations

import torch

from torch_utils import training_stats
from training import distributed

#----------------------------------------------------------------------------
# Raised with nonfinite='stop'.

class NonFiniteError(FloatingPointError):
    pass

#----------------------------------------------------------------------------
# 1.0 when the loss or any existing gradient of `params` holds a NaN/Inf, else 0.0: a [1] float32
# tensor on the device, computed without a host sync so that the ranks can reduce it first.

def nonfinite_flag(loss: torch.Tensor | None, params: list, device) -> torch.Tensor:
    checks = [torch.isfinite(loss).all()] if loss is not None else []
    checks += [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    if not checks:
        return torch.zeros([1], device=device)
    return torch.stack(checks).all().logical_not().to(torch.float32).reshape(1)

#----------------------------------------------------------------------------
# Counts skipped steps per phase; its state is plain data and goes into the training state.

class NonFiniteGuard:
    def __init__(self, mode: str = 'skip', rank: int = 0):
        if mode not in ('skip', 'stop'):
            raise ValueError(f'nonfinite: expected "skip" or "stop", got {mode!r}')
        self.mode = mode
        self.rank = rank
        self.counts = {}            # phase name -> number of skipped steps so far.

    def check(self, phase: str, step: int, cur_nimg: int, loss: torch.Tensor | None, params: list, device) -> bool:
        """True when the step may be taken. Must be called by every rank (it is a collective)."""
        bad = distributed.any_rank_flag(nonfinite_flag(loss, params, device))  # the phase's one host sync
        if not bad:
            return True
        self.counts[phase] = self.counts.get(phase, 0) + 1
        where = f'phase {phase}, step {step} (kimg {cur_nimg / 1000:.1f})'
        if self.mode == 'stop':
            raise NonFiniteError(f'Non-finite loss or gradient in {where}; stopping as requested by nonfinite=stop. '
                                 f'Resume from the last snapshot with a lower learning rate or gamma, or use nonfinite=skip.')
        if self.rank == 0:
            print(f'WARNING: non-finite loss or gradient in {where}; step skipped ({self.counts[phase]} so far in {phase}).')
        return False

    def report(self) -> None:
        # Cumulative counts, reported once per tick from rank 0 (counts are identical on all ranks).
        training_stats.report0('Nonfinite/skipped_steps', sum(self.counts.values()))
        for phase, count in self.counts.items():
            training_stats.report0(f'Nonfinite/{phase}', count)

    def state_dict(self) -> dict:
        return {'counts': dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.counts = dict(state.get('counts', {}))

#----------------------------------------------------------------------------

"""Guard against NaN/Inf in a phase's loss or gradients: report, then skip the step or stop.

Upstream silently replaces NaN gradients by zero (nan_to_num) and steps anyway, so a run can
degrade for days unnoticed. Here every non-finite step is reported with its phase and step,
counted (stats.jsonl `Nonfinite/*`), and either skipped (default) or turned into an error.
The decision is taken jointly by all ranks so that they never diverge. With the default fused Adam
it is taken on the device, and the host learns of skipped steps at the next tick.
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
    return device_flag(loss, params, device).reshape(1)


# The same as a 0-dim float32 tensor, from one fused foreach pass per dtype where torch offers one
# (the AMP check, with a scale of exactly 1: x * 1.0 leaves every gradient unchanged).
def device_flag(loss: torch.Tensor | None, params: list, device) -> torch.Tensor:
    tensors = ([loss.detach().reshape(1)] if loss is not None else []) + [p.grad for p in params if p.grad is not None]
    flag = torch.zeros([], dtype=torch.float32, device=device)
    if not tensors:
        return flag
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for (dtype, dev), group in by_dtype.items():
        if dev == flag.device and hasattr(torch, '_amp_foreach_non_finite_check_and_unscale_') and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones([], dtype=torch.float32, device=device))
        else:
            finite = torch.stack([torch.isfinite(t).all() for t in group]).all().to(flag.device)
            flag = torch.maximum(flag, finite.logical_not().to(torch.float32))
    return flag


# Optimizers that can skip a step on a device-side flag (fused Adam/AdamW, as torch's GradScaler uses them).
def can_skip_on_device(opt: torch.optim.Optimizer) -> bool:
    return bool(getattr(opt, '_step_supports_amp_scaling', False))

#----------------------------------------------------------------------------
# Counts skipped steps per phase; its state is plain data and goes into the training state.
#
# mode='skip' with an optimizer that can skip on a device-side flag (the default fused Adam): the
# flag goes straight into the optimizer's kernel, which leaves parameters, moments and step count
# untouched when it is 1, and the flags are read once per tick by flush(): no host sync inside an
# iteration. Otherwise (mode='stop', another optimizer, or on_device=False) each phase reads its
# flag at once and steps only when it is 0; both give the same parameters (tests/test_fast_loop.py).

class NonFiniteGuard:
    def __init__(self, mode: str = 'skip', rank: int = 0, on_device: bool = True):
        if mode not in ('skip', 'stop'):
            raise ValueError(f'nonfinite: expected "skip" or "stop", got {mode!r}')
        self.mode = mode
        self.rank = rank
        self.on_device = on_device
        self.counts = {}            # phase name -> number of skipped steps so far.
        self._pending = []          # (phase, step, cur_nimg, 0-dim device flag) not read yet.

    # Steps `opt` unless the loss or a gradient is non-finite on any rank. Every rank must call it.
    def step(self, phase: str, opt: torch.optim.Optimizer, step: int, cur_nimg: int, loss: torch.Tensor | None, params: list, device) -> None:
        if self.mode == 'skip' and self.on_device and can_skip_on_device(opt):
            flag = device_flag(loss, params, device)
            if distributed.is_distributed():
                distributed.all_reduce_max(flag)
            opt.found_inf = flag
            try:
                opt.step()
            finally:
                del opt.found_inf
            self._pending.append((phase, step, cur_nimg, flag))
        elif self.check(phase, step, cur_nimg, loss, params, device):
            opt.step()

    def check(self, phase: str, step: int, cur_nimg: int, loss: torch.Tensor | None, params: list, device) -> bool:
        """True when the step may be taken. Must be called by every rank (it is a collective)."""
        bad = distributed.any_rank_flag(nonfinite_flag(loss, params, device))  # the phase's one host sync
        if not bad:
            return True
        self._skipped(phase, step, cur_nimg)
        return False

    # Reads the flags of the steps taken since the last call (one host sync); call once per tick.
    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flags = torch.stack([flag for _phase, _step, _nimg, flag in pending]).cpu().tolist()
        for (phase, step, cur_nimg, _flag), bad in zip(pending, flags):
            if bad:
                self._skipped(phase, step, cur_nimg)

    def _skipped(self, phase: str, step: int, cur_nimg: int) -> None:
        self.counts[phase] = self.counts.get(phase, 0) + 1
        where = f'phase {phase}, step {step} (kimg {cur_nimg / 1000:.1f})'
        if self.mode == 'stop':
            raise NonFiniteError(f'Non-finite loss or gradient in {where}; stopping as requested by nonfinite=stop. '
                                 f'Resume from the last snapshot with a lower learning rate or gamma, or use nonfinite=skip.')
        if self.rank == 0:
            print(f'WARNING: non-finite loss or gradient in {where}; step skipped ({self.counts[phase]} so far in {phase}).')

    def report(self) -> None:
        # Cumulative counts, reported once per tick from rank 0 (counts are identical on all ranks).
        self.flush()
        training_stats.report0('Nonfinite/skipped_steps', sum(self.counts.values()))
        for phase, count in self.counts.items():
            training_stats.report0(f'Nonfinite/{phase}', count)

    def state_dict(self) -> dict:
        self.flush()
        return {'counts': dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self._pending = []
        self.counts = dict(state.get('counts', {}))

#----------------------------------------------------------------------------

"""Streaming mean and covariance of D's penultimate features, per class, for ASA.

The estimator is ISDA's exact pooling of a running mean and covariance (docs/asa.md §2): with
a batch of n samples, batch mean mu_b and biased batch covariance S_b, the new batch gets the
weight omega and

    Sigma <- (1-omega) Sigma + omega S_b + omega (1-omega) (mu - mu_b)(mu - mu_b)^T
    mu    <- (1-omega) mu + omega mu_b

which is exactly the weighted pooled (biased, ddof=0) covariance of everything seen so far with
weights (1-omega) : omega. The modes differ only in omega:

    running  omega = n / (N + n)                 pooled covariance of every sample ever seen
    ema      N' = ema_decay**n * N               each older sample's weight decays by ema_decay
             omega = max(n / (N' + n), ema_floor) per newer sample; never below ema_floor
    batch    omega = 1                           covariance of the latest update only

A class that receives no samples in an update keeps its state. Statistics are accumulated in
float64; on several ranks the batch's sufficient statistics are summed with one all-reduce so that
every rank holds the same Sigma. Rows with a non-finite value are dropped and counted.
"""

from __future__ import annotations

from typing import Optional

import torch

COV_MODES = ('running', 'ema', 'batch')

#----------------------------------------------------------------------------
# Sufficient statistics of one batch, shifted by the current mean of each sample's class so that
# the float64 sums stay well conditioned (shift ~ mean). Invalid rows get zero weight.

def batch_moments(x: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, shift: torch.Tensor) -> tuple:
    """x [N,C] float64, idx [N] class index, valid [N] bool, shift [K,C] float64
    -> (n [K], s1 [K,C] = sum (x - shift), s2 [K,C,C] = sum (x - shift)(x - shift)^T)."""
    K = shift.shape[0]
    weight = valid.to(x.dtype)                                          # [N]
    xs = torch.where(valid[:, None], x - shift.index_select(0, idx), torch.zeros_like(x))  # [N,C], NaN-free
    if K == 1:
        n = weight.sum().reshape(1)
        s1 = xs.sum(0, keepdim=True)
        s2 = (xs.T @ xs)[None]
        return n, s1, s2
    # Comparison instead of F.one_hot: no index validation, hence no host sync on CUDA.
    onehot = (idx[:, None] == torch.arange(K, device=idx.device)).to(x.dtype) * weight[:, None]  # [N,K]
    n = onehot.sum(0)
    s1 = onehot.T @ xs
    s2 = (onehot.T[:, :, None] * xs[None]).transpose(1, 2) @ xs         # [K,C,N] @ [N,C]
    return n, s1, s2

#----------------------------------------------------------------------------
# Weight omega of the new batch per class (0 where the class got no samples) and the new count.

def update_weight(count: torch.Tensor, n: torch.Tensor, mode: str, ema_decay: float, ema_floor: float) -> tuple:
    has = n > 0
    if mode == 'running':
        total = count + n
        omega = torch.where(has, n / total.clamp(min=1e-300), torch.zeros_like(n))
        return omega, total
    if mode == 'batch':
        omega = has.to(n.dtype)
        return omega, torch.where(has, n, count)
    # ema: decay old samples per new sample, then floor the new batch's weight.
    decayed = count * torch.pow(torch.full_like(n, ema_decay), n)
    omega = n / (decayed + n).clamp(min=1e-300)
    omega = torch.where(has, omega.clamp(min=ema_floor, max=1.0), torch.zeros_like(n))
    total = torch.where(has, n / omega.clamp(min=1e-300), count)
    return omega, total

#----------------------------------------------------------------------------
# Exact weighted merge of (mean, cov) with a batch given as sums shifted by `mean` itself: with
# d = s1/n = mu_b - mean and S_b = s2/n - d d^T, the module docstring's update simplifies to
# cov' = (1-omega) cov + (omega/n) s2 - omega^2 d d^T and mean' = mean + omega d (fewer C x C passes).

def merge_shifted(mean: torch.Tensor, cov: torch.Tensor, n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor,
                  omega: torch.Tensor) -> tuple:
    """mean [K,C], cov [K,C,C], n [K], s1 [K,C], s2 [K,C,C], omega [K] (0 where n = 0) -> (mean', cov')."""
    od = s1 * (omega / n.clamp(min=1))[:, None]                         # omega d, [K,C]
    new_cov = cov * (1 - omega)[:, None, None] + s2 * (omega / n.clamp(min=1))[:, None, None]
    new_cov = torch.baddbmm(new_cov, od[:, :, None], od[:, None, :], alpha=-1)
    return mean + od, new_cov

#----------------------------------------------------------------------------

class CovarianceTracker:
    """Per-class streaming feature mean and covariance (biased, ddof=0) in float64."""

    def __init__(self,
        dim:         int,               # Feature dimension C.
        num_classes: int   = 1,         # K: 1 = one class-agnostic covariance.
        mode:        str   = 'running', # 'running' | 'ema' | 'batch', see the module docstring.
        ema_decay:   float = 0.999,     # ema: per-sample decay of older samples' weight; memory ~ 1/(1-ema_decay) samples.
        ema_floor:   float = 0.0,       # ema: lower bound on the new batch's weight omega, 0 = none.
        sync:        bool  = True,      # All-reduce batch statistics when torch.distributed is initialized.
    ):
        if int(dim) < 1:
            raise ValueError(f'CovarianceTracker: dim must be >= 1, got {dim}')
        if int(num_classes) < 1:
            raise ValueError(f'CovarianceTracker: num_classes must be >= 1, got {num_classes}')
        if mode not in COV_MODES:
            raise ValueError(f'CovarianceTracker: unknown mode "{mode}"; use one of {", ".join(COV_MODES)}')
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f'CovarianceTracker: ema_decay must be in [0, 1], got {ema_decay}')
        if not 0.0 <= float(ema_floor) <= 1.0:
            raise ValueError(f'CovarianceTracker: ema_floor must be in [0, 1], got {ema_floor}')
        self.dim = int(dim)
        self.num_classes = int(num_classes)
        self.mode = mode
        self.ema_decay = float(ema_decay)
        self.ema_floor = float(ema_floor)
        self.sync = bool(sync)
        self._alloc(torch.device('cpu'))

    def _alloc(self, device: torch.device) -> None:
        K, C = self.num_classes, self.dim
        kw = dict(dtype=torch.float64, device=device)
        self.count = torch.zeros([K], **kw)         # (Effective) number of samples per class.
        self.mean = torch.zeros([K, C], **kw)
        self.cov = torch.zeros([K, C, C], **kw)
        self.skipped = torch.zeros([], dtype=torch.int64, device=device)  # Non-finite rows dropped.
        self.num_updates = 0
        self._cov32 = None

    def to(self, device) -> 'CovarianceTracker':
        device = torch.device(device)
        for name in ('count', 'mean', 'cov', 'skipped'):
            setattr(self, name, getattr(self, name).to(device))
        self._cov32 = None
        return self

    # Feed one batch of features [N,C] with class indices [N] (None = class 0). No CPU sync.
    @torch.no_grad()
    def update(self, features: torch.Tensor, idx: Optional[torch.Tensor] = None) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f'CovarianceTracker.update: features must be [N, {self.dim}], got {list(features.shape)}')
        if features.device != self.mean.device:
            self.to(features.device)
        x = features.detach().to(torch.float64)
        if idx is None:
            idx = torch.zeros([x.shape[0]], dtype=torch.long, device=x.device)
        idx = idx.to(device=x.device, dtype=torch.long)
        valid = torch.isfinite(x).all(dim=1)
        self.skipped += (~valid).sum()
        n, s1, s2 = batch_moments(x, idx, valid, self.mean)
        if self.sync and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            n, s1, s2 = _all_reduce_sum(n, s1, s2)
        omega, self.count = update_weight(self.count, n, self.mode, self.ema_decay, self.ema_floor)
        self.mean, self.cov = merge_shifted(self.mean, self.cov, n, s1, s2, omega)
        self.num_updates += 1
        self._cov32 = None

    # Float32 covariance [K,C,C] for the loss (cached until the next update).
    def covariance32(self) -> torch.Tensor:
        if self._cov32 is None:
            self._cov32 = self.cov.to(torch.float32)
        return self._cov32

    def trace(self) -> torch.Tensor:
        return self.cov.diagonal(dim1=-2, dim2=-1).sum(-1)              # [K]

    def state_dict(self) -> dict:
        return dict(dim=self.dim, num_classes=self.num_classes, mode=self.mode, ema_decay=self.ema_decay,
                    ema_floor=self.ema_floor, num_updates=self.num_updates,
                    count=self.count.cpu().clone(), mean=self.mean.cpu().clone(), cov=self.cov.cpu().clone(),
                    skipped=int(self.skipped))

    def load_state_dict(self, state: dict) -> None:
        for key in ('dim', 'num_classes'):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f'CovarianceTracker.load_state_dict: {key}={state[key]} in the state, '
                                 f'{getattr(self, key)} in this tracker; build the tracker with the same {key}')
        device = self.mean.device
        self.mode = state['mode']
        self.ema_decay = float(state['ema_decay'])
        self.ema_floor = float(state['ema_floor'])
        self.num_updates = int(state['num_updates'])
        self.count = torch.as_tensor(state['count'], dtype=torch.float64).to(device).clone()
        self.mean = torch.as_tensor(state['mean'], dtype=torch.float64).to(device).clone()
        self.cov = torch.as_tensor(state['cov'], dtype=torch.float64).to(device).clone()
        self.skipped = torch.as_tensor(int(state['skipped']), dtype=torch.int64, device=device)
        self._cov32 = None

#----------------------------------------------------------------------------
# One all-reduce (sum) of the batch statistics of every class, packed into a flat float64 tensor.

def _all_reduce_sum(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> tuple:
    flat = torch.cat([n.reshape(-1), s1.reshape(-1), s2.reshape(-1)])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    K, C = s1.shape
    n = flat[:K]
    s1 = flat[K:K + K * C].reshape(K, C)
    s2 = flat[K + K * C:].reshape(K, C, C)
    return n, s1, s2

#----------------------------------------------------------------------------

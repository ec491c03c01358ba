"""The math of StyleGAN2 training as small pure functions.

Losses, regularizers, EMA and optimizer corrections take tensors or numbers and return new ones;
none of them mutates its inputs, so the loss and the loop only sequence them.
"""

from __future__ import annotations

import math

import torch

# Non-saturating logistic loss (Goodfellow et al. 2014, as used by StyleGAN2): it lives with the
# loss-side plugin sequence that both our loss and the patched upstream loss share.
from asa_plugin.host import logistic_loss  # noqa: F401

#----------------------------------------------------------------------------
# R1 penalty (Mescheder et al. 2018, Eq. 9): squared norm of dD/dx per sample, summed over CHW.

def r1_penalty(real_grads: torch.Tensor) -> torch.Tensor:
    return real_grads.square().flatten(1).sum(dim=1)

#----------------------------------------------------------------------------
# Path-length regularization (Karras et al. 2020, StyleGAN2 Eq. 4). ws_grads [N, num_ws, w_dim]
# is d(sum(img * noise))/dws; the length is the RMS over layers of the per-layer L2 norm.

def path_lengths(ws_grads: torch.Tensor) -> torch.Tensor:
    return ws_grads.square().sum(dim=2).mean(dim=1).sqrt()


# Returns (per-sample penalty, new pl_mean). pl_mean is the running mean `a` of Eq. 4, updated by
# lerp with weight pl_decay; the returned value is detached so it never carries a graph.
def pl_penalty(pl_lengths: torch.Tensor, pl_mean: torch.Tensor, pl_decay: float) -> tuple:
    new_mean = pl_mean.lerp(pl_lengths.detach().mean(), pl_decay)
    return (pl_lengths - new_mean).square(), new_mean.detach()


# Noise image of the PL estimate, scaled by 1/sqrt(H*W) so that the penalty is resolution-independent.
def pl_noise(img: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])

#----------------------------------------------------------------------------
# EMA decay of G_ema (StyleGAN2-ADA): half-life ema_kimg, optionally limited to ema_rampup * cur_nimg
# so that early in training G_ema follows G closely (beta = 0 on the very first step).

def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None, cur_nimg: int) -> float:
    half_life = ema_kimg * 1000 # in images
    if ema_rampup is not None:
        half_life = min(half_life, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))

#----------------------------------------------------------------------------
# Lazy-regularization optimizer correction (StyleGAN2 Appendix C): a regularizer applied every
# `interval` minibatches shares the optimizer, whose lr becomes lr*r and betas beta**r, r = I/(I+1).

def lazy_reg_adjust(lr: float, betas: tuple, interval: int | None) -> tuple:
    if interval is None:
        return lr, tuple(betas)
    ratio = interval / (interval + 1)
    return lr * ratio, tuple(beta ** ratio for beta in betas)

#----------------------------------------------------------------------------
# Style mixing cutoff (StyleGAN Sec. 3.1): with probability `prob` a layer index in [1, num_ws),
# from which the second latent's ws are used; num_ws (no mixing) otherwise.

def mixing_cutoff(num_ws: int, prob: float, coin: float, u: float) -> int:
    if prob <= 0 or coin >= prob or num_ws < 2:
        return num_ws
    return 1 + min(int(u * (num_ws - 1)), num_ws - 2)

#----------------------------------------------------------------------------

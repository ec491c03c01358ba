"""ASA's upper bound of the expected logistic loss under Gaussian feature augmentation.

For the logit l = w^T f + b and augmented features f~ ~ N(f, lam Sigma), the logit is Gaussian,
l~ ~ N(l, lam w^T Sigma w), and for any Gaussian u ~ N(mu, s2) Jensen's inequality on the concave
log gives E[softplus(u)] = E[log(1 + e^u)] <= log(1 + E[e^u]) = softplus(mu + s2/2)
(ISDA; METHODS.md §5.2; derivation in docs/asa.md). Everything here is a pure function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

G_LOSS_FORMS = ('ns', 'saturating')

#----------------------------------------------------------------------------
# q = w^T Sigma w per sample. w [N,C]; sigma [C,C] (shared), [K,C,C] with idx [N] (per class),
# or [N,C,C] (per sample).

def quad_form(w: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor = None) -> torch.Tensor:
    if sigma.ndim == 3 and sigma.shape[0] == 1 and (idx is not None or w.shape[0] != 1):
        sigma = sigma[0]                                                # One shared class.
    if sigma.ndim == 2:
        return ((w @ sigma) * w).sum(dim=1)
    if sigma.ndim == 3 and idx is not None:
        sigma = sigma.index_select(0, idx)                              # [N,C,C] gathered per sample.
    if sigma.ndim != 3 or sigma.shape[0] != w.shape[0]:
        raise ValueError(f'quad_form: sigma must be [C,C], [K,C,C] with idx, or [N,C,C]; got {list(sigma.shape)} for w {list(w.shape)}')
    return (torch.bmm(w[:, None, :], sigma)[:, 0, :] * w).sum(dim=1)

#----------------------------------------------------------------------------
# The shifted logit whose plain softplus loss is the bound: the margin lam/2 q is subtracted from
# logits pushed towards 'real' and added to logits pushed towards 'fake'.

def adjusted_logits(logits: torch.Tensor, q: torch.Tensor, lam: float, target: str) -> torch.Tensor:
    margin = (0.5 * lam) * q.reshape(logits.shape[0], *([1] * (logits.ndim - 1))).to(logits.dtype)
    if target == 'real':
        return logits - margin
    if target == 'fake':
        return logits + margin
    raise ValueError(f'adjusted_logits: target must be "real" or "fake", got "{target}"')

#----------------------------------------------------------------------------
# D loss per sample (Equation L_D^ASA, METHODS.md §5.2).

def asa_d_loss(l_real: torch.Tensor, l_fake: torch.Tensor, q_real: torch.Tensor, q_fake: torch.Tensor,
               lam: float) -> torch.Tensor:
    return F.softplus(-l_real + 0.5 * lam * q_real) + F.softplus(l_fake + 0.5 * lam * q_fake)

#----------------------------------------------------------------------------
# G loss per sample: non-saturating softplus(-l + lam/2 q) or the 2022 code's saturating
# -softplus(l + lam/2 q) (G maximizes D's bounded loss on fakes).

def asa_g_loss(l_fake: torch.Tensor, q_fake: torch.Tensor, lam: float, form: str = 'ns') -> torch.Tensor:
    if form == 'ns':
        return F.softplus(-l_fake + 0.5 * lam * q_fake)
    if form == 'saturating':
        return -F.softplus(l_fake + 0.5 * lam * q_fake)
    raise ValueError(f'asa_g_loss: form must be one of {", ".join(G_LOSS_FORMS)}, got "{form}"')

#----------------------------------------------------------------------------
# The loss only evaluates softplus(-x) for G. To train G on the saturating loss anyway, return an
# x whose value is the non-saturating shifted logit (so the logged loss stays comparable) and whose
# gradient makes d softplus(-x) equal d[-softplus(l + m)]: x = (l - m) + k (l - l.detach()) with
# k = sigmoid(l + m) / sigmoid(m - l), detached.

def saturating_surrogate(l_fake: torch.Tensor, q_fake: torch.Tensor, lam: float) -> torch.Tensor:
    m = (0.5 * lam) * q_fake.reshape(l_fake.shape[0], *([1] * (l_fake.ndim - 1))).to(l_fake.dtype)
    with torch.no_grad():
        k = torch.exp((F.logsigmoid(l_fake + m) - F.logsigmoid(m - l_fake)).clamp(max=60.0))
    return (l_fake - m).detach() + k * (l_fake - l_fake.detach())

#----------------------------------------------------------------------------
# lambda schedule: ramp 'none' (constant lambda0), 'linear' (0 -> lambda0 over the whole run, ISDA),
# or a number N (0 -> lambda0 over the first N kimg, then constant).

def parse_ramp(ramp) -> object:
    """'none' | 'linear' | kimg (float > 0); accepts '500', '500kimg', 500."""
    if isinstance(ramp, str):
        text = ramp.strip().lower()
        if text in ('none', 'linear'):
            return text
        text = text[:-4] if text.endswith('kimg') else text
        try:
            ramp = float(text)
        except ValueError:
            raise ValueError(f'ramp must be "none", "linear" or a number of kimg such as "500kimg", got "{ramp}"') from None
    if isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not ramp > 0:
        raise ValueError(f'ramp must be "none", "linear" or a positive number of kimg, got {ramp!r}')
    return float(ramp)


def lambda_schedule(lambda0: float, ramp, cur_nimg: int, total_kimg: float) -> float:
    if ramp == 'none':
        return float(lambda0)
    span_kimg = float(total_kimg) if ramp == 'linear' else float(ramp)
    if span_kimg <= 0:
        return float(lambda0)
    return float(lambda0) * min(max(cur_nimg / (span_kimg * 1000.0), 0.0), 1.0)

#----------------------------------------------------------------------------

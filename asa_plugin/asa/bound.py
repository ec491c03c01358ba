"""ASA's logistic loss under Gaussian feature augmentation: ISDA's bound or the exact expectation.

For the logit l = w^T f + b and augmented features f~ ~ N(f, lam Sigma), the logit is Gaussian,
l~ ~ N(l, lam q) with q = w^T Sigma w. For u ~ N(mu, s2), Jensen's inequality on the concave log
gives E[softplus(u)] <= log(1 + E[e^u]) = softplus(mu + s2/2) (ISDA, form 'jensen'); the form
'expected' computes E[softplus(u)] itself by quadrature, which grows like s instead of s2 when
the logit scale is large (derivation in docs/asa.md). Everything here is a pure function.
"""

from __future__ import annotations

import math

import numpy as np
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
# The loss evaluates softplus(-x) for target 'real' and softplus(x) for target 'fake'; a
# formulation enters it as the effective logit x whose plain loss is the formulation's loss.
# With s2 = lam q the variance of the augmented logit l~ ~ N(l, s2):
#
#   jensen     x = l -+ s2/2                   ISDA's closed-form upper bound (the 2022 ASA code)
#   expected   x = -+ softplus^-1(E[softplus(-+l~)])   the exact expected loss (Gauss-Hermite)
#   moderated  x = l / sqrt(1 + pi s2/8)       the logit whose sigmoid is E[sigmoid(l~)] (probit
#                                              approximation): bounded by |l|, scale-free for large s2

FORMS = ('moderated', 'jensen', 'expected')

_GH_NODES = 32
_gh_cache = {}

def _gauss_hermite(device) -> tuple:
    """Nodes t_i and weights w_i/sqrt(pi) (float64) with E[g(eps)] ~= sum_i w_i g(sqrt(2) t_i)."""
    if device not in _gh_cache:
        t, w = np.polynomial.hermite.hermgauss(_GH_NODES)
        _gh_cache[device] = (torch.as_tensor(t * np.sqrt(2.0), dtype=torch.float64, device=device),
                             torch.as_tensor(w / np.sqrt(np.pi), dtype=torch.float64, device=device))
    return _gh_cache[device]


def _per_sample(q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return q.reshape(logits.shape[0], *([1] * (logits.ndim - 1)))


def expected_softplus(mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[softplus(mu + s eps)], eps ~ N(0, 1), elementwise, float64 (32-node Gauss-Hermite)."""
    t, w = _gauss_hermite(mu.device)
    u = mu.to(torch.float64)[..., None] + s.to(torch.float64)[..., None] * t
    return (F.softplus(u) * w).sum(-1)


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0: log(e^y - 1) = y + log(1 - e^-y) (stable both ends)."""
    y = y.clamp(min=1e-300)                                             # float64: softplus(-690) ~ 1e-300.
    return y + torch.log(-torch.expm1(-y))


def augmentation_std(q: torch.Tensor, lam: float) -> torch.Tensor:
    """std of the augmented logit, sqrt(lam q); the floor keeps d sqrt finite at q = 0."""
    return (lam * q.to(torch.float64)).clamp(min=1e-24).sqrt()


def adjusted_logits(logits: torch.Tensor, q: torch.Tensor, lam: float, target: str,
                    form: str = 'jensen') -> torch.Tensor:
    if target not in ('real', 'fake'):
        raise ValueError(f'adjusted_logits: target must be "real" or "fake", got "{target}"')
    sign = -1.0 if target == 'real' else 1.0                           # loss = softplus(sign * x)
    q = _per_sample(q, logits)
    if form == 'jensen':
        return logits + sign * (0.5 * lam) * q.to(logits.dtype)
    if form == 'expected':
        s = augmentation_std(q, lam)
        x = sign * softplus_inverse(expected_softplus(sign * logits, s))
        return x.to(logits.dtype)
    if form == 'moderated':
        return logits * torch.rsqrt(1 + (math.pi / 8 * lam) * q.to(logits.dtype))
    raise ValueError(f'adjusted_logits: form must be one of {", ".join(FORMS)}, got "{form}"')

#----------------------------------------------------------------------------
# D loss per sample (L_D of docs/asa.md §1, jensen form).

def asa_d_loss(l_real: torch.Tensor, l_fake: torch.Tensor, q_real: torch.Tensor, q_fake: torch.Tensor,
               lam: float) -> torch.Tensor:
    return F.softplus(-l_real + 0.5 * lam * q_real) + F.softplus(l_fake + 0.5 * lam * q_fake)

#----------------------------------------------------------------------------
# G loss per sample: non-saturating softplus(-l + lam/2 q) or the 2022 code's saturating
# -softplus(l + lam/2 q) (G maximizes D's bounded loss on fakes); jensen form.

def asa_g_loss(l_fake: torch.Tensor, q_fake: torch.Tensor, lam: float, form: str = 'ns') -> torch.Tensor:
    if form == 'ns':
        return F.softplus(-l_fake + 0.5 * lam * q_fake)
    if form == 'saturating':
        return -F.softplus(l_fake + 0.5 * lam * q_fake)
    raise ValueError(f'asa_g_loss: form must be one of {", ".join(G_LOSS_FORMS)}, got "{form}"')

#----------------------------------------------------------------------------
# The loss only evaluates softplus(-x) for G. To train G on the saturating loss -L_fake(l) anyway,
# return an x whose value is the non-saturating effective logit x0 (so the logged loss stays
# comparable) and whose gradient w.r.t. l makes d softplus(-x) equal d[-L_fake(l)]:
# x = x0 + k (l - l.detach()) with k = L_fake'(l) / sigmoid(-x0), detached, where L_fake is the
# form's loss of a fake (for jensen, k = sigmoid(l + m) / sigmoid(m - l)).

def saturating_surrogate(l_fake: torch.Tensor, q_fake: torch.Tensor, lam: float, form: str = 'jensen') -> torch.Tensor:
    q = _per_sample(q_fake, l_fake).detach()
    with torch.enable_grad():
        l0 = l_fake.detach().to(torch.float64).requires_grad_(True)
        (slope,) = torch.autograd.grad(F.softplus(adjusted_logits(l0, q, lam, 'fake', form)).sum(), l0)
    with torch.no_grad():
        x0 = adjusted_logits(l_fake.detach(), q, lam, 'real', form)
        log_k = torch.log(slope.clamp(min=1e-300)) - F.logsigmoid(-x0.to(torch.float64))
        k = torch.exp(log_k.clamp(max=60.0)).to(l_fake.dtype)
    return x0 + k * (l_fake - l_fake.detach())

#----------------------------------------------------------------------------
# lambda schedule in kimg, independent of the run's length: ramp 'none' (constant lambda0) or a
# number N (0 -> lambda0 over the first N kimg, then constant).

def parse_ramp(ramp) -> object:
    """'none' | kimg (float > 0); accepts '500', '500kimg', 500."""
    if isinstance(ramp, str):
        text = ramp.strip().lower()
        if text == 'none':
            return text
        if text == 'linear':
            raise ValueError('ramp=linear (over the whole --kimg) was removed so that the strength does not '
                             'depend on the run length; use ramp=none or a number of kimg such as ramp=500kimg')
        text = text[:-4] if text.endswith('kimg') else text
        try:
            ramp = float(text)
        except ValueError:
            raise ValueError(f'ramp must be "none" or a number of kimg such as "500kimg", got "{ramp}"') from None
    if isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not ramp > 0:
        raise ValueError(f'ramp must be "none" or a positive number of kimg, got {ramp!r}')
    return float(ramp)


def lambda_schedule(lambda0: float, ramp, cur_nimg: int) -> float:
    if ramp == 'none':
        return float(lambda0)
    return float(lambda0) * min(max(cur_nimg / (float(ramp) * 1000.0), 0.0), 1.0)

#----------------------------------------------------------------------------

"""The loss-side sequence of plugin calls, shared by every loss that hosts an ``AugmentStack``.

training/loss.py (our StyleGAN2 loss) and patches/asa_loss.py (upstream's loss in a patched
checkout) differ in how they run G and D; what they do with the plugin between those calls is
written once here (docs/design.md "Augmentation plugin API"). Each function takes the stack and a
``run_D(img, c, augment=True) -> (logits [N,1], features [N,C] or None)`` and knows nothing of the
loss that calls it. The caller backpropagates what these return.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from torch_utils import training_stats

RunD = Callable[..., tuple]

#----------------------------------------------------------------------------
# Non-saturating logistic loss (Goodfellow et al. 2014, as used by StyleGAN2): the per-sample loss
# that pushes logits towards 'real' (softplus(-l)) or towards 'fake' (softplus(l)).

def logistic_loss(logits: torch.Tensor, target: str) -> torch.Tensor:
    if target == 'real':
        return F.softplus(-logits)
    if target == 'fake':
        return F.softplus(logits)
    raise ValueError(f'logistic_loss: target must be "real" or "fake", got {target!r}')


def report_scores(logits: torch.Tensor, kind: str) -> None:
    training_stats.report(f'Loss/scores/{kind}', logits)
    training_stats.report(f'Loss/signs/{kind}', logits.sign())

#----------------------------------------------------------------------------
# A phase's extra loss (DAG heads, ASA reconstruction), reported, as a scalar; None without one.

def extra_loss(stack, phase: str, run_D: RunD, real_img, real_c, gen_img, gen_c) -> Optional[torch.Tensor]:
    extra = stack.extra_loss(phase, run_D, real_img, real_c, gen_img, gen_c)
    if extra is None:
        return None
    extra = extra.mean()
    training_stats.report(f'Loss/{phase}/extra', extra)
    return extra


def _plus_extra(loss: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
    return loss if extra is None else loss + extra

#----------------------------------------------------------------------------
# Gmain: G's fakes through D, pushed towards 'real'. real_img/real_c are the clean reals.

def g_main(stack, run_D: RunD, gen_img, gen_c, real_img, real_c) -> torch.Tensor:
    logits, features = run_D(gen_img, gen_c)
    report_scores(logits, 'fake')
    loss = logistic_loss(stack.adjust_logits(logits, features, gen_c, target='real', phase='Gmain'), 'real')
    training_stats.report('Loss/G/loss', loss)
    main = loss.mean() * float(stack.main_loss_weight('Gmain'))
    return _plus_extra(main, extra_loss(stack, 'Gmain', run_D, real_img, real_c, gen_img, gen_c))

#----------------------------------------------------------------------------
# Dmain, fake path: returns (per-sample loss, detached, for the D/loss report; scalar to backprop).

def d_fake(stack, run_D: RunD, gen_img, gen_c) -> tuple:
    logits, features = run_D(gen_img, gen_c)
    report_scores(logits, 'fake')
    if features is not None:
        stack.observe_features(features.detach(), gen_c, 'fake')
    loss = logistic_loss(stack.adjust_logits(logits, features, gen_c, target='fake', phase='Dmain'), 'fake')
    return loss.detach(), loss.mean() * float(stack.main_loss_weight('Dmain'))

#----------------------------------------------------------------------------
# Dmain real path and R1 share one pass: the reals, mixed by the plugin (APA), detached (and with
# requires_grad for R1: its gradient is taken w.r.t. these clean mixed reals), through D.

class RealPass(NamedTuple):
    img:        torch.Tensor    # the (mixed) reals D saw before augmentation; requires_grad for R1
    c:          torch.Tensor    # their labels
    logits:     torch.Tensor    # [N, 1]
    features:   Optional[torch.Tensor]


def d_real(stack, run_D: RunD, real_img, real_c, gen_fn, for_r1: bool) -> RealPass:
    img, c = stack.mix_reals(real_img, real_c, gen_fn)
    img = img.detach().requires_grad_(for_r1)
    logits, features = run_D(img, c)
    report_scores(logits, 'real')
    stack.observe_real_logits(logits.detach())     # the R1 pass counts too, as upstream's controller does
    return RealPass(img, c, logits, features)


def d_real_main(stack, run_D: RunD, real: RealPass, real_img, real_c, gen_img, gen_c, fake_loss=None) -> torch.Tensor:
    """Dmain's real-path loss (scalar); ``fake_loss`` (per sample) joins the Loss/D/loss report."""
    if real.features is not None:
        stack.observe_features(real.features.detach(), real.c, 'real')
    loss = logistic_loss(stack.adjust_logits(real.logits, real.features, real.c, target='real', phase='Dmain'), 'real')
    training_stats.report('Loss/D/loss', loss if fake_loss is None else fake_loss + loss)
    main = loss.mean() * float(stack.main_loss_weight('Dmain'))
    return _plus_extra(main, extra_loss(stack, 'Dmain', run_D, real_img, real_c, gen_img, gen_c))

#----------------------------------------------------------------------------

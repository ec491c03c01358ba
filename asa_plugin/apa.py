"""APA: Adaptive Pseudo Augmentation, "Deceive D" (Jiang et al., NeurIPS 2021, arXiv 2111.06849).

Before D's real pass, each real sample is replaced with probability p by a detached generated
image: x~ = m * G(z') + (1 - m) * x, m ~ Bernoulli(p) per sample (docs/augmentations.md "apa"). As in
the official code, G(z') are the fakes of the same iteration's G step, not the batch D scores
as fakes (the loss supplies them through ``gen_fn``), and the real label stays with a swapped
image unless swap_labels. p adapts like ADA's: it grows when r_t = E[sign(D(x~))] exceeds the
target, counted over the Dmain and the R1 passes. R1 sees the mixed batch too, because the loss
mixes before every real pass. APA alone applies no image augmentation.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import AugmentMethod, PluginContext
from .controller import AdaptiveP
from .registry import register_augment
from .rng import MethodRandom

#----------------------------------------------------------------------------
# The pseudo-augmentation step as a pure function: per-sample swap of reals for fakes.

def pseudo_mix(real_img: torch.Tensor, real_c: torch.Tensor, gen_img: torch.Tensor, gen_c: torch.Tensor,
               mask: torch.Tensor, swap_labels: bool = False) -> tuple:
    """Where ``mask`` [N] is true, take the fake (and, with swap_labels, its label) instead of the real."""
    if gen_img.shape != real_img.shape:
        raise ValueError(f'APA: generated batch {list(gen_img.shape)} does not match the real batch '
                         f'{list(real_img.shape)}; gen_fn must return a batch of the same size')
    img = torch.where(mask.reshape(-1, 1, 1, 1), gen_img.detach().to(real_img.dtype), real_img)
    if swap_labels and real_c.ndim == 2 and real_c.shape[1] > 0:
        real_c = torch.where(mask.reshape(-1, 1), gen_c.to(real_c.dtype), real_c)
    return img, real_c

#----------------------------------------------------------------------------

@register_augment('apa')
class APA(AugmentMethod):
    stage = 10              # first on D's input path: replaces reals before any augmentation

    def __init__(self,
        p:           float = 0.0,   # Initial (adaptive) or constant (adaptive=false) probability, in [0, 1].
        target:      float = 0.6,   # Target of r_t = E[sign(D(mixed reals))], in (0, 1); official 0.6.
        interval:    int   = 4,     # Update p every this many iterations.
        kimg:        Optional[float] = None, # p moves by 1 per this many kimg; None = 500, or 100 when resuming.
        adaptive:    bool  = True,  # False = keep p constant (DeceiveD's --aug=fixed).
        shared_p:    bool  = False, # Use the ADA pipe's p (official --with-dataaug behaviour) instead of our own.
        swap_labels: bool  = False, # True = a swapped fake carries its own label; False = official (the real label stays).
        seed:        Optional[int] = None, # Seed of the method's generator; None = from torch's RNG.
    ):
        super().__init__()
        self.check_options(dict(p=p, target=target, interval=interval, kimg=kimg))
        self.kimg_given = kimg is not None
        self.controller = AdaptiveP(target=target, interval=interval, kimg=500 if kimg is None else kimg, p=float(p))
        self.adaptive = bool(adaptive)
        self.shared_p = bool(shared_p)
        self.swap_labels = bool(swap_labels)
        self.rng = MethodRandom(seed)
        self._p_source = []     # [method owning the ADA pipe] when shared_p; a list so it is not a submodule

    @classmethod
    def check_options(cls, options: dict) -> None:
        p, target = options.get('p', 0.0), options.get('target', 0.6)
        interval, kimg = options.get('interval', 4), options.get('kimg')
        if not 0 <= p <= 1:
            raise ValueError(f'p={p} is outside [0, 1]')
        if not 0 < target < 1:
            raise ValueError(f'target={target} is outside (0, 1); official 0.6, smaller for fewer images')
        if int(interval) != interval or interval < 1:
            raise ValueError(f'interval={interval} must be an integer >= 1')
        if kimg is not None and not kimg > 0:
            raise ValueError(f'kimg={kimg} must be > 0')

    @classmethod
    def spec_conflict(cls, options: dict, others: dict):
        # shared_p needs a method that provides p, and makes APA's own controller options meaningless.
        if not options.get('shared_p', False):
            return None
        if not any(other.provides_p for other, _ in others.values()):
            return 'apa:shared_p shares APA\'s p with the ADA pipe, but there is no ada or fixed; add one or drop shared_p'
        ignored = sorted(k for k in ('p', 'target', 'interval', 'kimg', 'adaptive') if k in options)
        if ignored:
            return (f'apa:shared_p takes p from the ADA pipe, so apa option(s) {", ".join(ignored)} would be ignored; '
                    f'set them on ada instead or drop shared_p')
        return None

    def link(self, methods: list) -> None:
        # shared_p: follow the stack's p provider (without one, patches/ links upstream's own pipe).
        source = next((m for m in methods if m.provides_p), None)
        if self.shared_p and source is not None:
            self.set_p_source(source)

    def setup(self, ctx: PluginContext) -> None:
        super().setup(ctx)
        self.rng.fold_in_rank(ctx.rank)
        if ctx.resumed and not self.kimg_given:
            self.controller.kimg = 100.0    # react faster after resuming, like upstream's ada_kimg

    def set_p_source(self, method: AugmentMethod) -> None:
        """Take p from ``method`` (ADA or fixed) instead of our own controller (shared_p)."""
        self._p_source = [method]

    @property
    def p(self) -> float:
        if self._p_source:
            source = self._p_source[0]
            p = getattr(source, 'p', None)
            if p is None:
                p = source.upstream_augment_pipe().p
            return float(p)
        return self.controller.p

    def mix_reals(self, real_img, real_c, gen_fn):
        p = self.p
        if p <= 0:
            return real_img, real_c
        gen_img, gen_c = gen_fn()
        gen = self.rng.generator(real_img.device)
        mask = torch.rand([real_img.shape[0]], generator=gen, device=real_img.device) < p
        return pseudo_mix(real_img, real_c, gen_img, gen_c, mask, self.swap_labels)

    def observe_real_logits(self, logits):
        if self.adaptive and not self._p_source:
            self.controller.observe(logits)

    def update(self, cur_nimg, batch_size):
        if self.adaptive and not self._p_source:
            self.controller.step(batch_size)

    def stats(self) -> dict:
        return {'Progress/apa_p': self.p}

    def plugin_state(self) -> dict:
        return {'controller': self.controller.state_dict(), 'rng': self.rng.state_dict()}

    def load_plugin_state(self, state: dict) -> None:
        self.controller.load_state_dict(state['controller'])
        self.rng.load_state_dict(state['rng'])

    def describe(self) -> str:
        if self._p_source or self.shared_p:
            how = 'p shared with the ADA pipe'
        elif self.adaptive:
            c = self.controller
            how = f'adaptive p={c.p:g}, target={c.target:g}, interval={c.interval}, kimg={c.kimg:g}'
        else:
            how = f'fixed p={self.controller.p:g}'
        return f'apa ({how}, swap_labels={self.swap_labels})'

#----------------------------------------------------------------------------

"""DiffAugment: Differentiable Augmentation (Zhao et al., NeurIPS 2020, arXiv 2006.10738).

Every image D sees, real and fake, in the D and the G steps, goes through the same random
differentiable transforms; every op of the policy is applied to every sample with fresh
per-sample parameters (no probability, no adaptivity). Ranges follow the official code
(docs/augmentations.md "diffaug"); images are in [-1, 1].
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import AugmentMethod, PluginContext
from .registry import register_augment
from .rng import MethodRandom

#----------------------------------------------------------------------------
# Per-sample uniform draws in [lo, hi) shaped [N, 1, 1, 1] for broadcasting over CHW.

def _uniform(x: torch.Tensor, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand([x.shape[0], 1, 1, 1], generator=gen, device=x.device, dtype=x.dtype)
    return u * (hi - lo) + lo

#----------------------------------------------------------------------------
# Color: brightness x + U(-0.5, 0.5); saturation around the per-pixel channel mean, U(0, 2);
# contrast around the per-sample mean, U(0.5, 1.5).

def rand_brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + _uniform(x, -0.5, 0.5, gen)

#----------------------------------------------------------------------------

def rand_saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0, gen) + mean

#----------------------------------------------------------------------------

def rand_contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5, gen) + mean

#----------------------------------------------------------------------------
# Translation by whole pixels, t ~ U{-s, ..., s} with s = int(ratio * size + 0.5) per axis and
# sample; vacated pixels become 0 (mid-grey). Written as a gather so gradients reach the input.

def _shift_axis(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    view = [1, 1, 1, 1]
    view[dim] = size
    src = torch.arange(size, device=x.device).reshape(view) + shift.reshape(-1, 1, 1, 1)  # out[i] = x[i + t]
    valid = (src >= 0) & (src < size)
    src = src.clamp(0, size - 1).expand(x.shape)
    return x.gather(dim, src) * valid.to(x.dtype)

#----------------------------------------------------------------------------
# Largest shift in pixels for a size (official rounding): 2 px at 16, 4 px at 32.

def translation_shift(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)

#----------------------------------------------------------------------------

def rand_translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    N, _, H, W = x.shape
    sh, sw = translation_shift(H, ratio), translation_shift(W, ratio)
    th = torch.randint(-sh, sh + 1, [N], generator=gen, device=x.device)
    tw = torch.randint(-sw, sw + 1, [N], generator=gen, device=x.device)
    return _shift_axis(_shift_axis(x, th, 2), tw, 3)

#----------------------------------------------------------------------------
# Cutout: a box of int(ratio * size + 0.5) per axis set to 0; its centre o ~ U{0, ..., size - 1 +
# (1 - box mod 2)}, the box spans [o - box // 2, o - box // 2 + box) clipped to the image.

#----------------------------------------------------------------------------
# Side of the cutout box in pixels (official rounding): 8 px at 16 with ratio 0.5.

def cutout_box(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)

#----------------------------------------------------------------------------

def rand_cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    N, _, H, W = x.shape
    bh, bw = cutout_box(H, ratio), cutout_box(W, ratio)
    oh = torch.randint(0, H + (1 - bh % 2), [N, 1, 1, 1], generator=gen, device=x.device) - bh // 2
    ow = torch.randint(0, W + (1 - bw % 2), [N, 1, 1, 1], generator=gen, device=x.device) - bw // 2
    rows = torch.arange(H, device=x.device).reshape(1, 1, H, 1)
    cols = torch.arange(W, device=x.device).reshape(1, 1, 1, W)
    inside = (rows >= oh) & (rows < oh + bh) & (cols >= ow) & (cols < ow + bw)
    return x * (~inside).to(x.dtype)

#----------------------------------------------------------------------------
# Policy words and the ops they expand to, in order.

POLICIES = {
    'color':       ('brightness', 'saturation', 'contrast'),
    'translation': ('translation',),
    'cutout':      ('cutout',),
}

#----------------------------------------------------------------------------
# Policy text -> validated word list.

def parse_policy(policy: str) -> list:
    """Split 'color,translation,cutout' into its words; raise ValueError naming the allowed ones."""
    return parse_word_list(policy, POLICIES, 'policy word')


# Comma-separated words, each from `allowed` and at most once (DiffAugment policies, DAG groups).
def parse_word_list(policy: str, allowed, noun: str) -> list:
    words = [w.strip() for w in policy.split(',') if w.strip()]
    if not words:
        raise ValueError(f'policy "{policy}" is empty; allowed: {", ".join(allowed)}')
    for w in words:
        if w not in allowed:
            raise ValueError(f'unknown {noun} "{w}"; allowed: {", ".join(allowed)}')
    if len(set(words)) != len(words):
        raise ValueError(f'policy "{policy}" repeats a {noun.split()[-1]}; give each of {", ".join(allowed)} at most once')
    return words

#----------------------------------------------------------------------------
# The whole DiffAugment transform as one pure function of (images, policy, generator).

def diff_augment(x: torch.Tensor, words: list, gen: torch.Generator,
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> torch.Tensor:
    """Apply the policy words in order to a batch [NCHW]; every op to every sample."""
    ops = {
        'brightness':  lambda x: rand_brightness(x, gen),
        'saturation':  lambda x: rand_saturation(x, gen),
        'contrast':    lambda x: rand_contrast(x, gen),
        'translation': lambda x: rand_translation(x, gen, translation_ratio),
        'cutout':      lambda x: rand_cutout(x, gen, cutout_ratio),
    }
    for word in words:
        for op in POLICIES[word]:
            x = ops[op](x)
    return x.contiguous()

#----------------------------------------------------------------------------

@register_augment('diffaug')
class DiffAugment(AugmentMethod):
    spec_words = 'policy'
    stage = 21              # after the ADA pipe when both are explicitly allowed (with_ada)
    image_space = True
    image_space_hint = ', or add diffaug:...,with_ada to run DiffAugment after the ADA pipe on purpose (the official port makes them exclusive)'

    def __init__(self,
        policy:            str   = 'color,translation,cutout', # Comma-separated words, applied in order.
        translation_ratio: float = 0.125,   # Max shift as a fraction of the size (official 1/8).
        cutout_ratio:      float = 0.5,     # Box side as a fraction of the size (official 1/2).
        p:                 float = 1.0,     # Fraction of samples augmented; 1 = official (all), 0 = off.
        with_ada:          bool  = False,   # Explicitly allow running after an ADA pipe.
        seed:              Optional[int] = None, # Seed of the method's generator; None = from torch's RNG.
    ):
        super().__init__()
        self.check_options(dict(policy=policy, translation_ratio=translation_ratio, cutout_ratio=cutout_ratio, p=p))
        self.words = parse_policy(policy)
        self.policy = ','.join(self.words)
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.p = float(p)
        self.with_ada = bool(with_ada)
        self.rng = MethodRandom(seed)

    @classmethod
    def check_options(cls, options: dict) -> None:
        parse_policy(options.get('policy', 'color,translation,cutout'))
        for key in ('translation_ratio', 'cutout_ratio', 'p'):
            value = options.get(key, 0.0)
            if not 0 <= float(value) <= 1:
                raise ValueError(f'{key}={value} is outside [0, 1]')

    @classmethod
    def shares_image_space(cls, options: dict) -> bool:
        return bool(options.get('with_ada', False))

    @classmethod
    def spec_conflict(cls, options: dict, others: dict):
        if options.get('with_ada', False) and not any(other.provides_p for other, _ in others.values()):
            return 'diffaug:with_ada allows combining with ada or fixed, but neither is in the spec; drop with_ada'
        return None

    def setup(self, ctx: PluginContext) -> None:
        super().setup(ctx)
        self.rng.fold_in_rank(ctx.rank)

    def augment(self, img, c):
        if self.p <= 0:
            return img
        gen = self.rng.generator(img.device)
        out = diff_augment(img, self.words, gen, self.translation_ratio, self.cutout_ratio)
        if self.p < 1:
            keep = torch.rand([img.shape[0], 1, 1, 1], generator=gen, device=img.device) >= self.p
            out = torch.where(keep, img, out)
        return out

    def plugin_state(self) -> dict:
        return {'rng': self.rng.state_dict()}

    def load_plugin_state(self, state: dict) -> None:
        self.rng.load_state_dict(state['rng'])

    def describe(self) -> str:
        return (f'diffaug (policy={self.policy}, translation_ratio={self.translation_ratio:g}, '
                f'cutout_ratio={self.cutout_ratio:g}, p={self.p:g})')

#----------------------------------------------------------------------------

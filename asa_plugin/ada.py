"""ADA (Karras et al., NeurIPS 2020): upstream's AugmentPipe in front of D, with p adapted to
D's overfitting (``ada``) or held constant (``fixed``). Upstream's ``--aug=ada|fixed``.

    --aug=ada                       bgc pipe, target 0.6, p from 0
    --aug=ada:bgcfnc,target=0.7     another preset and target
    --aug=ada:xflip,noise           a pipe made of single ops
    --aug=fixed:bgc,p=0.2           constant p
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch

from .augment_pipe import AugmentPipe
from .base import AugmentMethod, PluginContext
from .controller import AdaptiveP
from .registry import register_augment
from .rng import MethodRandom

#----------------------------------------------------------------------------
# Pipe presets of upstream's --augpipe (docs/ada.md), the one table: each listed op's multiplier is 1.

OPS = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac',
       'brightness', 'contrast', 'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout']

_BLIT = ['xflip', 'rotate90', 'xint']
_GEOM = ['scale', 'rotate', 'aniso', 'xfrac']
_COLOR = ['brightness', 'contrast', 'lumaflip', 'hue', 'saturation']

PRESETS = {
    'blit':   _BLIT,
    'geom':   _GEOM,
    'color':  _COLOR,
    'filter': ['imgfilter'],
    'noise':  ['noise'],
    'cutout': ['cutout'],
    'bg':     _BLIT + _GEOM,
    'bgc':    _BLIT + _GEOM + _COLOR,
    'bgcf':   _BLIT + _GEOM + _COLOR + ['imgfilter'],
    'bgcfn':  _BLIT + _GEOM + _COLOR + ['imgfilter', 'noise'],
    'bgcfnc': _BLIT + _GEOM + _COLOR + ['imgfilter', 'noise', 'cutout'],
}

def pipe_kwargs(pipe: str) -> dict:
    """AugmentPipe keyword arguments for a comma-separated list of presets and op names."""
    words = [w.strip() for w in str(pipe).split(',') if w.strip()]
    if not words:
        raise ValueError(f'pipe="{pipe}" is empty; use a preset ({", ".join(PRESETS)}) or op names ({", ".join(OPS)})')
    kwargs = {}
    for word in words:
        if word not in PRESETS and word not in OPS:
            raise ValueError(f'pipe="{pipe}": "{word}" is neither a preset ({", ".join(PRESETS)}) nor an op ({", ".join(OPS)})')
        for op in PRESETS.get(word, [word]):
            kwargs[op] = 1
    return {op: kwargs[op] for op in OPS if op in kwargs}  # upstream's keyword order

#----------------------------------------------------------------------------
# The one translator from upstream's augmentation settings to an --aug spec (docs/ada.md).

UPSTREAM_AUGS = ('noaug', 'ada', 'fixed')

def upstream_spec(aug: str, p=None, target=None, augpipe=None, interval=None, kimg=None) -> str:
    """Spec for upstream's --aug=noaug|ada|fixed with --p, --target and --augpipe (and the
    ada_interval/ada_kimg of its options). Not validated here; see asa_plugin.validate_spec."""
    if aug not in UPSTREAM_AUGS:
        raise ValueError(f'aug="{aug}" is not one of upstream\'s {", ".join(UPSTREAM_AUGS)}')
    if aug == 'noaug':
        return 'noaug'
    options = [augpipe or 'bgc']
    if aug == 'ada':
        options.append(f'target={0.6 if target is None else target:g}')
        options += [f'{key}={value:g}' for key, value in (('interval', interval), ('kimg', kimg), ('p', p)) if value]
    elif p is not None:
        options.append(f'p={p:g}')
    return f'{aug}:' + ','.join(options)


def pipe_from_kwargs(augment_kwargs: dict) -> str:
    """Pipe words for upstream's augment_kwargs (a preset name when its ops match one exactly)."""
    ops = {k: v for k, v in augment_kwargs.items() if k != 'class_name'}
    unknown = sorted(k for k, v in ops.items() if k not in OPS or v not in (0, 1))
    if unknown:
        raise ValueError(f'augment_kwargs: {", ".join(unknown)} is not an op switched on or off (0/1); '
                         f'give the augmentation as aug_spec instead, e.g. ada:bgc,target=0.6')
    on = [op for op in OPS if ops.get(op)]
    return next((name for name, preset in PRESETS.items() if sorted(preset) == sorted(on)), ','.join(on))


def spec_from_upstream_options(augment_kwargs, augment_p=0, ada_target=None, ada_interval=None, ada_kimg=None) -> str:
    """Spec for an options dict written by upstream's train.py (no aug_spec): its keys, once."""
    if augment_kwargs is None:
        return 'noaug'
    aug = 'ada' if ada_target is not None else 'fixed'
    return upstream_spec(aug, p=augment_p, target=ada_target, augpipe=pipe_from_kwargs(augment_kwargs),
                         interval=ada_interval, kimg=ada_kimg)

#----------------------------------------------------------------------------
# Shared by ada and fixed: the pipe, its random stream, and the hooks that do not depend on how
# p is chosen. The pipe's p buffer always mirrors `self.p`, so snapshots carry it.

class _PipeMethod(AugmentMethod):
    spec_words = 'pipe'
    stage = 20              # after APA's mix, before DAG's heads
    image_space = True
    provides_p = True

    def __init__(self, pipe: str, seed: Optional[int]):
        super().__init__()
        self.pipe_spec = ','.join(w.strip() for w in str(pipe).split(',') if w.strip())
        self.pipe = AugmentPipe(**pipe_kwargs(pipe)).requires_grad_(False)
        self.rng = MethodRandom(seed)
        # Upstream's own pipe (e.g. inside a patched upstream checkout) only knows the global RNG.
        self._pipe_takes_generator = 'generator' in inspect.signature(self.pipe.forward).parameters

    @property
    def p(self) -> float:
        raise NotImplementedError

    def _sync_pipe_p(self) -> None:
        self.pipe.p.copy_(torch.as_tensor(self.p, dtype=torch.float32))

    def setup(self, ctx: PluginContext) -> None:
        super().setup(ctx)
        self.pipe.to(ctx.device)
        self.rng.fold_in_rank(ctx.rank)
        self._sync_pipe_p()

    def augment(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # p = 0 skips the pipe: exactly the identity, where upstream's resampling is only close to it.
        if self.p <= 0:
            return img
        kwargs = dict(generator=self.rng.generator(img.device)) if self._pipe_takes_generator else {}
        if img.dtype == torch.float32:
            return self.pipe(img, **kwargs)
        return self.pipe(img.to(torch.float32), **kwargs).to(img.dtype)

    def stats(self) -> dict:
        return {'Progress/augment': float(self.p)}

    def upstream_augment_pipe(self) -> Optional[torch.nn.Module]:
        self._sync_pipe_p()
        return self.pipe

#----------------------------------------------------------------------------
# Adaptive p (ADA paper Sec. 3): raise p while E[sign(D(real))] exceeds the target.

@register_augment('ada')
class AdaptiveAugment(_PipeMethod):
    def __init__(self,
        pipe:     str   = 'bgc',    # Preset (blit ... bgcfnc) or comma-separated op names.
        target:   float = 0.6,      # ADA target for r_t = E[sign(D(real))], in (0, 1).
        interval: int   = 4,        # Update p every this many iterations.
        kimg:     Optional[float] = None, # p can move by 1 per kimg thousand reals; None = 500, or 100 when resuming.
        p:        float = 0.0,      # Initial p, >= 0.
        seed:     Optional[int] = None, # Seed of the pipe's random stream; None = from torch's RNG.
    ):
        super().__init__(pipe, seed)
        self.check_options(dict(pipe=pipe, target=target, interval=interval, kimg=kimg, p=p))
        self.kimg_option = None if kimg is None else float(kimg)
        self.controller = AdaptiveP(target=target, interval=int(interval), kimg=kimg or 500, p=float(p))
        self._sync_pipe_p()

    @classmethod
    def check_options(cls, options: dict) -> None:
        pipe_kwargs(options.get('pipe', 'bgc'))
        target, interval = options.get('target', 0.6), options.get('interval', 4)
        kimg, p = options.get('kimg'), options.get('p', 0.0)
        if not 0 < float(target) < 1:
            raise ValueError(f'target={target} is outside (0, 1)')
        if int(interval) != interval or interval < 1:
            raise ValueError(f'interval={interval} must be an integer >= 1')
        if kimg is not None and not float(kimg) > 0:
            raise ValueError(f'kimg={kimg} must be > 0')
        if not float(p) >= 0:
            raise ValueError(f'p={p} must be >= 0')

    @property
    def p(self) -> float:
        return self.controller.p

    def setup(self, ctx: PluginContext) -> None:
        if self.kimg_option is None:  # Upstream's ada_kimg: 500, or 100 when resuming.
            self.controller.kimg = 100.0 if ctx.resumed else 500.0
        super().setup(ctx)

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        self.controller.observe(logits)

    def update(self, cur_nimg: int, batch_size: int) -> None:
        before = self.controller.p
        if self.controller.step(batch_size) != before:
            self._sync_pipe_p()

    def plugin_state(self) -> dict:
        return {'controller': self.controller.state_dict(), 'rng': self.rng.state_dict()}

    def load_plugin_state(self, state: dict) -> None:
        self.controller.load_state_dict(state['controller'])
        if 'rng' in state:
            self.rng.load_state_dict(state['rng'])
        self._sync_pipe_p()

    def describe(self) -> str:
        c = self.controller
        return f'ada (pipe={self.pipe_spec}, target={c.target:g}, interval={c.interval}, kimg={c.kimg:g}, p={c.p:.4g})'

#----------------------------------------------------------------------------
# Constant p (upstream's --aug=fixed --p=P).

@register_augment('fixed')
class FixedAugment(_PipeMethod):
    def __init__(self,
        pipe: str   = 'bgc',        # Preset (blit ... bgcfnc) or comma-separated op names.
        p:    Optional[float] = None, # Probability multiplier in [0, 1]; required.
        seed: Optional[int] = None, # Seed of the pipe's random stream; None = from torch's RNG.
    ):
        super().__init__(pipe, seed)
        self.check_options(dict(pipe=pipe, p=p))
        self._p = float(p)
        self._sync_pipe_p()

    @classmethod
    def check_options(cls, options: dict) -> None:
        pipe_kwargs(options.get('pipe', 'bgc'))
        p = options.get('p')
        if p is None:
            raise ValueError('p is required for fixed; give a value in [0, 1], e.g. fixed:bgc,p=0.2')
        if not 0 <= float(p) <= 1:
            raise ValueError(f'p={p} is outside [0, 1]')

    @property
    def p(self) -> float:
        return self._p

    def plugin_state(self) -> dict:
        return {'p': self._p, 'rng': self.rng.state_dict()}

    def load_plugin_state(self, state: dict) -> None:
        self._p = float(state['p'])
        if 'rng' in state:
            self.rng.load_state_dict(state['rng'])
        self._sync_pipe_p()

    def describe(self) -> str:
        return f'fixed (pipe={self.pipe_spec}, p={self._p:g})'

#----------------------------------------------------------------------------

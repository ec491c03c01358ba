"""AugmentStack: several methods behind the one ``AugmentMethod`` interface the loss talks to.

The stack runs its methods in the canonical order on D's input path (METHODS.md section 6):
APA mix -> ADA / DiffAugment -> DAG heads -> ASA bound, chains the image and logit hooks,
sums the extra losses, merges the stats and keeps each method's plugin state under its name.
Combinations that make no sense are refused before anything is built.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import registry
from .base import AugmentMethod, PluginContext
from .spec import canonical_spec, parse_spec, sort_methods, spec_error

#----------------------------------------------------------------------------
# Compatibility rules over a parsed spec [(name, options)]; each returns a reason or None.

IMAGE_SPACE = ('ada', 'fixed', 'diffaug')   # methods that transform every image D sees
ADA_PIPES = ('ada', 'fixed')                # methods that own an upstream AugmentPipe

def _rule_duplicates(parsed):
    names = [n for n, _ in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f'{", ".join(twice)} appears more than once; give each method once with all its options'
    return None

#----------------------------------------------------------------------------
# noaug is the absence of augmentation, not a method to stack.

def _rule_noaug_alone(parsed):
    if len(parsed) > 1 and any(n == 'noaug' for n, _ in parsed):
        return 'noaug means no augmentation and cannot be combined; drop noaug or the other methods'
    return None

#----------------------------------------------------------------------------
# ada and fixed would both own the snapshot's augment_pipe.

def _rule_one_ada_pipe(parsed):
    pipes = [n for n, _ in parsed if n in ADA_PIPES]
    if len(pipes) > 1:
        return f'{" and ".join(pipes)} both drive the one ADA pipe; use ada (adaptive p) or fixed (constant p), not both'
    return None

#----------------------------------------------------------------------------
# Two image-space augmentations only on explicit request (the official port forbids it).

def _rule_image_space(parsed):
    present = [n for n, _ in parsed if n in IMAGE_SPACE]
    if len(present) > 1 and not dict(parsed).get('diffaug', {}).get('with_ada', False):
        return (f'{" and ".join(present)} both augment every image D sees (the official DiffAugment port makes them '
                f'exclusive); pick one, or add diffaug:...,with_ada to run DiffAugment after the ADA pipe on purpose')
    return None

#----------------------------------------------------------------------------
# shared_p needs a pipe to share with, and makes APA's own controller options meaningless.

def _rule_shared_p(parsed):
    opts = dict(parsed).get('apa')
    if not opts or not opts.get('shared_p', False):
        return None
    if not any(n in ADA_PIPES for n, _ in parsed):
        return 'apa:shared_p shares APA\'s p with the ADA pipe, but there is no ada or fixed; add one or drop shared_p'
    ignored = sorted(k for k in ('p', 'target', 'interval', 'kimg', 'adaptive') if k in opts)
    if ignored:
        return (f'apa:shared_p takes p from the ADA pipe, so apa option(s) {", ".join(ignored)} would be ignored; '
                f'set them on ada instead or drop shared_p')
    return None

#----------------------------------------------------------------------------
# with_ada without an ADA pipe is a typo or a leftover.

def _rule_with_ada(parsed):
    opts = dict(parsed).get('diffaug', {})
    if opts.get('with_ada', False) and not any(n in ADA_PIPES for n, _ in parsed):
        return 'diffaug:with_ada allows combining with ada or fixed, but neither is in the spec; drop with_ada'
    return None

#----------------------------------------------------------------------------
# All rules, checked in this order; the first reason found is reported.

RULES = [_rule_duplicates, _rule_noaug_alone, _rule_one_ada_pipe, _rule_image_space, _rule_shared_p, _rule_with_ada]

def check_combination(spec, parsed) -> None:
    """Raise SpecError with the reason if the methods in ``parsed`` do not make sense together."""
    for rule in RULES:
        reason = rule(parsed)
        if reason:
            raise spec_error(spec, reason)

#----------------------------------------------------------------------------
# Several methods as one; the loss and the loop see only this.

class AugmentStack(AugmentMethod):
    name = 'stack'

    def __init__(self, methods: list, spec: str = ''):     # methods in canonical order; spec = canonical text
        super().__init__()
        self.methods = torch.nn.ModuleList(methods)
        self.spec = spec or '+'.join(m.name for m in methods)

    @property
    def needs_features(self) -> bool:
        return any(m.needs_features for m in self.methods)

    def get(self, name: str) -> Optional[AugmentMethod]:
        """The method registered as ``name`` in this stack, or None."""
        return next((m for m in self.methods if m.name == name), None)

    def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        for m in self.methods:
            m.setup(ctx)
        apa = self.get('apa')
        pipe_method = next((m for m in self.methods if m.name in ADA_PIPES), None)
        if apa is not None and getattr(apa, 'shared_p', False) and pipe_method is not None:
            apa.set_p_source(pipe_method)   # else the caller links it (patches/: upstream's own pipe)

    # --- image space ---------------------------------------------------------

    def augment(self, img, c):
        for m in self.methods:
            img = m.augment(img, c)
        return img

    def mix_reals(self, real_img, real_c, gen_fn: Callable[[], tuple]):
        cache = []
        def gen_once():     # several mixers share one generated batch
            if not cache:
                cache.append(gen_fn())
            return cache[0]
        for m in self.methods:
            real_img, real_c = m.mix_reals(real_img, real_c, gen_once)
        return real_img, real_c

    # --- feedback from D -----------------------------------------------------

    def observe_real_logits(self, logits):
        for m in self.methods:
            m.observe_real_logits(logits)

    def observe_features(self, features, c, kind):
        for m in self.methods:
            m.observe_features(features, c, kind)

    # --- loss ----------------------------------------------------------------

    def adjust_logits(self, logits, features, c, target, phase):
        for m in self.methods:
            logits = m.adjust_logits(logits, features, c, target, phase)
        return logits

    def main_loss_weight(self, phase):
        weight = 1.0
        for m in self.methods:
            weight *= m.main_loss_weight(phase)
        return weight

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        total = None
        for m in self.methods:
            loss = m.extra_loss(phase, run_D, real_img, real_c, gen_img, gen_c)
            if loss is not None:
                total = loss if total is None else total + loss
        return total

    def extra_parameters(self, net):
        return [p for m in self.methods for p in m.extra_parameters(net)]

    # --- bookkeeping ---------------------------------------------------------

    def update(self, cur_nimg, batch_size):
        for m in self.methods:
            m.update(cur_nimg, batch_size)

    def stats(self) -> dict:
        merged = {}
        for m in self.methods:
            for key, value in m.stats().items():
                merged.setdefault(key, value)   # first (earlier on D's path) wins on a clash
        return merged

    def upstream_augment_pipe(self):
        return next((p for p in (m.upstream_augment_pipe() for m in self.methods) if p is not None), None)

    def plugin_state(self) -> dict:
        return {m.name: m.plugin_state() for m in self.methods}

    def load_plugin_state(self, state: dict, strict: bool = True) -> None:
        """Restore each method from ``state[name]``; with strict, unknown or missing names raise."""
        names = [m.name for m in self.methods]
        unknown = sorted(set(state) - set(names))
        missing = sorted(set(names) - set(state))
        if strict and (unknown or missing):
            raise ValueError(f'Plugin state does not match --aug={self.spec}: '
                             f'unexpected {unknown or "none"}, missing {missing or "none"}; '
                             f'resume with the spec the state was saved with')
        for m in self.methods:
            if m.name in state:
                m.load_plugin_state(state[m.name])

    def describe(self) -> str:
        return ' + '.join(m.describe() for m in self.methods)

#----------------------------------------------------------------------------

def create_augment_stack(spec: str, ctx: Optional[PluginContext] = None, exclude: tuple = ()) -> AugmentStack:
    """Build the stack for an ``--aug`` spec, refusing bad specs and combinations.

    Args:
        spec: e.g. ``'ada:bgc+dag:rotation'``; ``'noaug'`` for none.
        ctx:  if given, ``setup(ctx)`` is called on the stack (G and D must exist).
        exclude: names validated with the rest but not built (patches/ leaves ADA to upstream's pipe).
    Returns:
        An ``AugmentStack`` whose ``spec`` is the canonical text.
    Raises:
        SpecError: malformed spec, unknown method or option, bad value, or a meaningless combination.
    """
    parsed = parse_spec(spec)
    check_combination(spec, parsed)
    methods = []
    for name, kwargs in sort_methods(parsed):
        if name in exclude:
            continue
        try:
            methods.append(registry.create_augment(name, **kwargs))
        except (ValueError, TypeError) as e:
            raise spec_error(spec, f'{name}: {e}') from None
    stack = AugmentStack(methods, spec=canonical_spec(parsed))
    if ctx is not None:
        stack.setup(ctx)
    return stack

#----------------------------------------------------------------------------

"""AugmentStack: several methods behind the one ``AugmentMethod`` interface the loss talks to.

The stack runs its methods in the order of their ``stage`` on D's input path (docs/design.md
"Augmentation plugin API"), chains the image and logit hooks, sums the extra losses, merges the
stats and keeps each method's plugin state under its name. Combinations that make no sense are
refused by spec.py before anything is built.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import registry
from .base import AugmentMethod, PluginContext
from .spec import check_spec, format_spec, parse_spec, spec_error

#----------------------------------------------------------------------------
# Order on D's input path (docs/design.md "Augmentation plugin API"): by each class's `stage`,
# ties in the written order. The canonical spec lists methods in this order.

def sort_methods(parsed: list) -> list:
    """Stable sort of ``[(name, options)]`` into the order the stack runs them."""
    stage = lambda item: registry.get_augment_class(item[1][0]).stage
    return [item for _, item in sorted(enumerate(parsed), key=lambda t: (stage(t), t[0]))]


def validate_spec(spec: str) -> str:
    """Parse and check an ``--aug`` spec without building anything; returns its canonical text.
    Raises SpecError (one line naming the spec and the fix)."""
    parsed = parse_spec(spec)
    check_spec(spec, parsed)
    return format_spec(sort_methods(parsed))


def canonical_spec(spec) -> str:
    """The canonical text of a spec (string or ``parse_spec`` output); raises SpecError."""
    parsed = parse_spec(spec) if isinstance(spec, str) else list(spec)
    return format_spec(sort_methods(parsed))

#----------------------------------------------------------------------------
# Several methods as one; the loss and the loop see only this.

class AugmentStack(AugmentMethod):
    name = 'stack'

    def __init__(self, methods: list, spec: str = ''):     # methods in canonical order; spec = canonical text
        super().__init__()
        self.methods = torch.nn.ModuleList(methods)
        self.spec = spec or '+'.join(m.name for m in methods)
        self._attend = {}

    @property
    def needs_features(self) -> bool:
        return any(m.needs_features for m in self.methods)

    def attend_maps(self) -> dict:
        return self._attend

    def get(self, name: str) -> Optional[AugmentMethod]:
        """The method registered as ``name`` in this stack, or None."""
        return next((m for m in self.methods if m.name == name), None)

    def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        for m in self.methods:
            m.setup(ctx)
        for m in self.methods:
            m.link(list(self.methods))
        self._attend = {}                   # Fixed after setup; read in every D call.
        for m in self.methods:
            for res, fn in m.attend_maps().items():
                if res in self._attend:
                    raise ValueError(f'{m.name} and another method both transform D\'s {res}x{res} features')
                self._attend[res] = fn

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
    check_spec(spec, parsed)
    methods = []
    for name, kwargs in sort_methods(parsed):
        if name in exclude:
            continue
        try:
            methods.append(registry.create_augment(name, **kwargs))
        except (ValueError, TypeError) as e:
            raise spec_error(spec, f'{name}: {e}') from None
    stack = AugmentStack(methods, spec=format_spec(sort_methods(parsed)))
    if ctx is not None:
        stack.setup(ctx)
    return stack

#----------------------------------------------------------------------------

"""noaug: no augmentation; D sees the images as they are (upstream's --aug=noaug)."""

from __future__ import annotations

from .base import AugmentMethod
from .registry import register_augment

#----------------------------------------------------------------------------
# Every hook keeps the base class's no-op default.

@register_augment('noaug')
class NoAugment(AugmentMethod):
    stage = 0
    alone = True

    def describe(self) -> str:
        return 'noaug (no augmentation)'

# The loss's default: NoAugment holds no state, so one instance serves every loss that has none.
NO_AUGMENTATION = NoAugment()

#----------------------------------------------------------------------------

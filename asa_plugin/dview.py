"""What a plugin may know of the discriminator: a narrow view instead of the module.

Plugins read D's output layer (ASA's bound, DAG's heads), D's label projection (DAG shares it) and
the channel count of the feature map at a given resolution (ASA's attention); they never reach into D's
attributes themselves (docs/design.md "Discriminator feature API"). The view holds D but is not
stored in it, so D's pickles hold nothing of the plugin. Features come with D's logits from the
loss's run_D, not from here.
"""

from __future__ import annotations

from typing import Optional

import torch


class DiscriminatorView:
    def __init__(self, D):
        # D: our Discriminator, or an adapter around upstream's that adds last_layer (patches/).
        self._D = D

    @property
    def c_dim(self) -> int:
        return int(self._D.c_dim)

    @property
    def device(self) -> torch.device:
        return self._D.b4.out.weight.device

    @property
    def out_shape(self) -> tuple:
        """(O, C) of D's output layer: O = 1, or cmap_dim for a conditional D; C = feature width."""
        O, C = self._D.b4.out.weight.shape
        return int(O), int(C)

    def last_layer(self, c: torch.Tensor) -> tuple:
        """Effective (w [N, C], b [N]) of D's output layer: logits = (features * w).sum(1) + b."""
        return self._D.last_layer(c)

    def label_map(self, c: torch.Tensor) -> Optional[torch.Tensor]:
        """D's own label projection cmap [N, O] for a conditional D, else None."""
        return self._D.mapping(None, c) if self.c_dim > 0 else None

    def channels_at(self, res: int) -> int:
        """Channels of D's feature map at resolution ``res`` (the output of block b{2 res}); the valid
        resolutions are listed on a miss. Methods transform that map through ``attend_maps()``."""
        block = getattr(self._D, f'b{2 * int(res)}', None)
        if block is None or not hasattr(block, 'conv1'):
            valid = sorted(int(n[1:]) // 2 for n, m in self._D.named_children()
                           if n.startswith('b') and n[1:].isdigit() and hasattr(m, 'conv1'))
            raise ValueError(f'resolution {res} has no discriminator block; use one of {valid}')
        return int(block.conv1.weight.shape[0])

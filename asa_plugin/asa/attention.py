"""Optional CBAM attention inside D for ASA (docs/asa.md §4; Woo et al., ECCV 2018).

CBAM transforms the output feature map of one discriminator block without changing D's class,
parameters or pickles: the method lists it in ``attend_maps()`` and the loss passes that to every D
call (``D(img, c, attend=...)``; the patched upstream loss installs a block hook for the duration of
one call only). Nothing is ever stored in D, so copies and snapshots of D are the plain network.
CBAM's parameters are trained through ``extra_parameters('D')`` and saved in the plugin state.
"""

from __future__ import annotations

import torch

#----------------------------------------------------------------------------
# Convolutional Block Attention Module: F' = M_c(F) * F, F'' = M_s(F') * F'.

class CBAM(torch.nn.Module):
    def __init__(self,
        channels:    int,           # Feature channels of the attended map.
        reduction:   int = 16,      # Hidden width of the channel MLP is channels // reduction (CBAM default).
        kernel_size: int = 7,       # Spatial attention kernel (CBAM default).
    ):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel_mlp = torch.nn.Sequential(
            torch.nn.Linear(channels, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, channels))
        self.spatial = torch.nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)                                         # fp16 blocks: attend in fp32.
        ch = self.channel_mlp(x.mean(dim=[2, 3])) + self.channel_mlp(x.amax(dim=[2, 3]))
        x = x * torch.sigmoid(ch)[:, :, None, None]
        sp = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        x = x * torch.sigmoid(self.spatial(sp))
        return x.to(dtype)

#----------------------------------------------------------------------------

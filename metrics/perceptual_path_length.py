"""Perceptual Path Length (Karras et al. 2019, "A style-based generator architecture for
GANs", §3): LPIPS distance between images at t and t+eps along random interpolation paths in
Z (slerp) or W (lerp), divided by eps^2, averaged after dropping the outer 1% on each side."""

from __future__ import annotations

import copy

import numpy as np
import torch

from metrics import metric_utils

#----------------------------------------------------------------------------
# Spherical interpolation between rows of a and b (normalized), t: [N].

def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)

def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # Rotate from a toward b in their common plane: the unit vector of b orthogonal to a
    # spans that plane together with a, and the angle walked is t times the angle between them.
    a, b = _unit(a), _unit(b)
    cos_ab = (a * b).sum(dim=-1, keepdim=True)
    angle = t.unsqueeze(-1) * torch.acos(cos_ab.clamp(-1, 1))
    ortho = _unit(b - cos_ab * a)
    return _unit(a * torch.cos(angle) + ortho * torch.sin(angle))

#----------------------------------------------------------------------------
# Mean of the distances between the 1st ('lower') and 99th ('higher') percentiles.
# NumPy 2 removed percentile(interpolation=); method= is the same selection.

def ppl_filtered_mean(dist: np.ndarray) -> float:
    dist = np.asarray(dist, np.float64)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())

#----------------------------------------------------------------------------
# Image post-processing before LPIPS: optional central face crop, box-downsample to 256 px,
# map [-1, 1] to [0, 255], grey to RGB.

def prepare_ppl_images(img: torch.Tensor, crop: bool) -> torch.Tensor:
    if crop:
        assert img.shape[2] == img.shape[3], 'PPL crop needs square images'
        c = img.shape[2] // 8
        img = img[:, :, c * 3 : c * 7, c * 2 : c * 6]
    factor = img.shape[2] // 256
    if factor > 1: # box filter: average each factor x factor block
        n, ch, h, w = img.shape
        img = img.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    img = (img + 1) * (255 / 2)
    return img.repeat([1, 3, 1, 1]) if img.shape[1] == 1 else img

#----------------------------------------------------------------------------
# One batch of path-length samples: distances [N] for N random paths.

class PPLSampler(torch.nn.Module):
    def __init__(self, G, G_kwargs, epsilon, space, sampling, crop, lpips):
        assert space in ('z', 'w') and sampling in ('full', 'end')
        super().__init__()
        self.G = copy.deepcopy(G)
        self.G_kwargs, self.epsilon, self.space, self.sampling, self.crop = G_kwargs, epsilon, space, sampling, crop
        self.lpips = lpips

    def _ws(self, z0, z1, c, t):
        G, eps = self.G, self.epsilon
        if self.space == 'w':
            w0, w1 = G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
            t = t.reshape(-1, 1, 1)
            return torch.cat([w0.lerp(w1, t), w0.lerp(w1, t + eps)])
        zt0, zt1 = slerp(z0, z1, t), slerp(z0, z1, t + eps)
        return G.mapping(z=torch.cat([zt0, zt1]), c=torch.cat([c, c]))

    def forward(self, z0, z1, c, t):
        noise_bufs = [buf for name, buf in self.G.named_buffers() if name.split('.')[-1] == 'noise_const']
        for buf in noise_bufs: # fresh constant noise per batch
            buf.copy_(torch.randn_like(buf))
        img = self.G.synthesis(ws=self._ws(z0, z1, c, t), **dict(self.G_kwargs, noise_mode='const', force_fp32=True))
        img = prepare_ppl_images(img, self.crop)
        lp0, lp1 = self.lpips(img, resize_images=False, return_lpips=True).chunk(2)
        return (lp0 - lp1).square().sum(1) / self.epsilon ** 2

#----------------------------------------------------------------------------

def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size, detector='vgg16'):
    G, latents = metric_utils.prepare_generator(opts)
    lpips = opts.detector(detector).load(opts.device)
    sampler = PPLSampler(G, opts.G_kwargs, epsilon, space, sampling, crop, lpips).eval().requires_grad_(False)
    dists, done = [], 0
    while done < num_samples:
        z = latents.z(batch_size * 2)
        t = torch.rand([batch_size], generator=latents.gen).to(opts.device) * (sampling == 'full')
        with torch.no_grad():
            dist = sampler(z[:batch_size], z[batch_size:], latents.c(batch_size), t)
        dist = metric_utils.gather_interleaved(dist.unsqueeze(1), opts.num_gpus)[:, 0]
        dists.append(dist.cpu())
        done += dist.shape[0]
        metric_utils._report(opts, 'ppl samples', done, num_samples)
    if opts.rank != 0:
        return float('nan')
    return ppl_filtered_mean(torch.cat(dists)[:num_samples].numpy())

#----------------------------------------------------------------------------

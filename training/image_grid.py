"""The image grids of a run folder: reals.png, fakes_init.png and fakes{kimg:06d}.png (docs/compatibility.md §2.3;
a later grid within the same whole kimg gets the exact name fakes{kimg:06d}.{frac:03d}.png, see training/checkpoint.py)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from training import checkpoint

#----------------------------------------------------------------------------
# Grid layout: columns from 7680 px and rows from 4320 px of target size, each clipped to
# [7, 32] and [4, 32]; unlabelled data is a seeded shuffle, labelled data one label per row.

def grid_shape(width: int, height: int) -> tuple:
    gw = int(np.clip(7680 // width, 7, 32))
    gh = int(np.clip(4320 // height, 4, 32))
    return gw, gh


def grid_indices(training_set, gw: int, gh: int, random_seed: int = 0) -> list:
    rnd = np.random.RandomState(random_seed)
    if not training_set.has_labels:
        order = list(range(len(training_set)))
        rnd.shuffle(order)
        return [order[i % len(order)] for i in range(gw * gh)]

    # Group by label; the key is the flattened raw label reversed, and the groups are sorted.
    groups = {}
    for idx in range(len(training_set)):
        key = tuple(np.asarray(training_set.get_details(idx).raw_label).flatten()[::-1])
        groups.setdefault(key, []).append(idx)
    keys = sorted(groups)
    for key in keys:
        rnd.shuffle(groups[key])
    # Row r shows label keys[r mod #labels]: the next gw members of that group (cycling if the group
    # is small); the group is then rotated so a later row with the same label continues from there.
    indices = []
    for row in range(gh):
        group = groups[keys[row % len(keys)]]
        take = [group[i % len(group)] for i in range(gw)]
        shift = gw % len(group)
        group[:] = group[shift:] + group[:shift]
        indices.extend(take)
    return indices


def setup_snapshot_image_grid(training_set, random_seed: int = 0) -> tuple:
    """Returns ``((gw, gh), images uint8 [N,C,H,W], labels float32 [N,c_dim])`` for the grid."""
    gw, gh = grid_shape(training_set.image_shape[2], training_set.image_shape[1])
    indices = grid_indices(training_set, gw, gh, random_seed)
    images, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)

#----------------------------------------------------------------------------
# Tiles [N,C,H,W] row-major into one image; maps drange to [0,255]; saves atomically.

def tile_grid(img, drange, grid_size) -> np.ndarray:
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = np.rint((img - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _N, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    return img


def save_image_grid(img, fname: str, drange, grid_size) -> None:
    tiles = tile_grid(img, drange, grid_size)
    if tiles.shape[2] == 1:
        image = PIL.Image.fromarray(tiles[:, :, 0], 'L')
    elif tiles.shape[2] == 3:
        image = PIL.Image.fromarray(tiles, 'RGB')
    else:
        raise ValueError(f'save_image_grid: {fname}: images must have 1 or 3 channels, got {tiles.shape[2]}')
    checkpoint.atomic_save_image(fname, image)

#----------------------------------------------------------------------------
# G_ema on the fixed grid latents, noise_mode='const' as upstream. On CUDA, batch_gpu at a time.
# On the CPU the per-sample grouped conv of the fused path is slow and small chunks waste time:
# the unfused path in chunks of 128 draws a 32x32 grid of tiny images about 10x faster.

@torch.no_grad()
def generate_grid(G_ema, grid_z: torch.Tensor, grid_c: torch.Tensor, batch_gpu: int) -> np.ndarray:
    on_cpu = grid_z.device.type == 'cpu'
    chunk = max(batch_gpu, 128) if on_cpu else batch_gpu
    kwargs = dict(noise_mode='const', fused_modconv=False) if on_cpu else dict(noise_mode='const')
    images = [G_ema(z=z, c=c, **kwargs).cpu() for z, c in zip(grid_z.split(chunk), grid_c.split(chunk))]
    return torch.cat(images).float().numpy()

#----------------------------------------------------------------------------

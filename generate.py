"""Generate images with a pretrained network pickle (upstream StyleGAN2-ADA's generate.py CLI, plus --device).

Latents are z = RandomState(seed).randn(1, z_dim), as upstream, so the same pickle and seeds give the
same images. Off CUDA the networks run in fp32 automatically. Every input is checked before the first
image is written, and every PNG is written atomically, so bad input leaves no partial files.
"""

from __future__ import annotations

import math
import os
import re
from typing import List, Optional

import click
import numpy as np

import dnnlib

# torch, legacy and PIL are imported where they are used, so that `--help` and input errors are instant.

#----------------------------------------------------------------------------
# "0-3,7,10-11" -> [0, 1, 2, 3, 7, 10, 11]; seeds must fit numpy's RandomState. Every bound is
# checked before a range is expanded, so "0-99999999999" is an error, not an exhausted RAM.

MAX_SEED = 2 ** 32 - 1
MAX_SEEDS = 1_000_000   # One PNG per seed; 50k (an FID set) fits with room to spare.

def parse_seeds(text: str) -> List[int]:
    ranges = []
    for part in str(text).split(','):
        part = part.strip()
        if part == '':
            continue
        m = re.fullmatch(r'(\d+)\s*-\s*(\d+)', part) or re.fullmatch(r'(\d+)()', part)
        if not m:
            raise ValueError(f'"{part}" is not a seed or a range like 0-3')
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f'range "{part}" is empty (end before start)')
        if hi > MAX_SEED:
            raise ValueError(f'seed {hi} is too large (max {MAX_SEED})')
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count == 0:
        raise ValueError('no seeds given; use e.g. --seeds=0-3,7')
    if count > MAX_SEEDS:
        raise ValueError(f'--seeds="{text}" asks for {count} images, more than {MAX_SEEDS}; split it into several runs')
    return [seed for lo, hi in ranges for seed in range(lo, hi + 1)]

#----------------------------------------------------------------------------
# One-hot label [1, c_dim] for --class; an unconditional network takes an empty label.

def make_label(c_dim: int, class_idx: Optional[int], device: torch.device) -> torch.Tensor:
    import torch
    label = torch.zeros([1, c_dim], device=device)
    if c_dim == 0:
        if class_idx is not None:
            raise ValueError('--class: the network is unconditional; omit --class')
        return label
    if class_idx is None:
        raise ValueError(f'--class: the network is conditional ({c_dim} classes); pass --class=0..{c_dim - 1}')
    if not 0 <= class_idx < c_dim:
        raise ValueError(f'--class: {class_idx} is out of range; the network has classes 0..{c_dim - 1}')
    label[:, class_idx] = 1
    return label

#----------------------------------------------------------------------------
# Same latent as upstream: float64 normal draws from the legacy RandomState, then float32.

def seed_to_z(seed: int, z_dim: int, device: torch.device) -> torch.Tensor:
    import torch
    z = np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)
    return torch.from_numpy(z).to(device)

#----------------------------------------------------------------------------
# NCHW float image in [-1, 1] -> HWC uint8, upstream's rounding: x * 127.5 + 128, clamped, truncated.

def to_uint8(img: torch.Tensor) -> np.ndarray:
    import torch
    hwc = img[0].permute(1, 2, 0)
    return (hwc * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()

def save_png(array: np.ndarray, path: str) -> None:
    # Atomic: a crash never leaves a half-written PNG under the final name.
    import PIL.Image
    mode = 'L' if array.shape[2] == 1 else 'RGB'
    image = PIL.Image.fromarray(array[:, :, 0] if mode == 'L' else array, mode)
    with dnnlib.util.AtomicFile(path, 'wb') as f:
        image.save(f, format='PNG')

#----------------------------------------------------------------------------
# Device choice: cuda when available; fp16 blocks run only on CUDA.

def resolve_device(name: Optional[str]) -> torch.device:
    import torch
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f'--device: "{name}" is not a device; use cpu, cuda or cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device: "{name}" requested but CUDA is not available; use --device=cpu')
    return device

def load_generator(network: str, device: torch.device, allow_unsafe: bool = False) -> torch.nn.Module:
    import legacy
    with dnnlib.util.open_url(network) as f:
        G = legacy.load_network_pkl(f, allow_unsafe=allow_unsafe)['G_ema']
    return G.eval().requires_grad_(False).to(device)

#----------------------------------------------------------------------------
# Plan every output first (checks inputs and existing files), then write.

def _output_paths(outdir: str, names: List[str]) -> List[str]:
    paths = [os.path.join(outdir, name) for name in names]
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        raise ValueError(f'--outdir: {existing[0]} already exists; choose an empty --outdir')
    return paths

def _load_projected_w(path: str, G: torch.nn.Module, device: torch.device) -> torch.Tensor:
    import torch
    try:
        with np.load(path, allow_pickle=False) as npz:
            ws = npz['w']
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f'--projected-w: cannot read key "w" from "{path}" ({type(err).__name__})') from None
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f'--projected-w: "w" has shape {ws.shape}, expected [N, {G.num_ws}, {G.w_dim}] for this network')
    return torch.tensor(ws, dtype=torch.float32, device=device)

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help='Snapshot .pkl to sample from (local path or http(s) URL)', required=True)
@click.option('--seeds', help='Seeds to render: ranges and single values, e.g. 0-3,7')
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation strength psi (1 = off, <1 = closer to the average face)', default=1, show_default=True)
@click.option('--class', 'class_idx', type=int, help='Class label (conditional networks only)')
@click.option('--noise-mode', help='Per-pixel noise: stored constant, fresh random, or off', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--projected-w', help='Render the ws stored under key "w" in this .npz instead of seeds', type=str, metavar='FILE')
@click.option('--outdir', help='Folder for the PNG files', type=str, required=True, metavar='DIR')
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', type=str, default=None)
@click.option('--allow-unsafe', help='Run code embedded in the pickle (trusted files only)', is_flag=True)
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, outdir, device, allow_unsafe):
    """Write one PNG per seed (or per projected w) from the G_ema of a network pickle.

    \b
    python generate.py --network=run/network-snapshot-000400.pkl --seeds=0-7 --outdir=samples
    python generate.py --network=cond.pkl --seeds=10,20 --class=3 --trunc=0.7 --outdir=samples
    python generate.py --network=run.pkl --projected-w=w.npz --outdir=samples
    """
    import legacy
    try:
        run_generate(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, outdir, device, allow_unsafe)
    except (ValueError, OSError, legacy.NetworkPickleError) as err:
        raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__)

def run_generate(network_pkl: str, seeds: Optional[str], truncation_psi: float, class_idx: Optional[int], noise_mode: str,
                 projected_w: Optional[str], outdir: str, device: Optional[str] = None, allow_unsafe: bool = False) -> List[str]:
    """Library entry point of the CLI; returns the written paths."""
    if projected_w is None and seeds is None:
        raise ValueError('--seeds: required unless --projected-w is given; use e.g. --seeds=0-3')
    if not math.isfinite(truncation_psi):
        raise ValueError(f'--trunc: {truncation_psi} is not a finite number; use e.g. --trunc=1 (off) or --trunc=0.7')
    seed_list = parse_seeds(seeds) if projected_w is None else []
    problem = dnnlib.util.output_folder_problem(outdir)
    if problem:  # before the (possibly long) network download and load
        raise ValueError(f'--outdir: {problem}; choose another --outdir')
    import torch
    dev = resolve_device(device)
    force_fp32 = (dev.type != 'cuda') # fp16 is slow or unsupported off CUDA.

    print(f'Reading {network_pkl}')
    G = load_generator(network_pkl, dev, allow_unsafe=allow_unsafe)

    if projected_w is not None:
        if seeds is not None:
            print('note: --projected-w given, so --seeds has no effect')
        ws = _load_projected_w(projected_w, G, dev)
        paths = _output_paths(outdir, [f'proj{idx:02d}.png' for idx in range(len(ws))])
        os.makedirs(outdir, exist_ok=True)
        with torch.inference_mode():
            for w, path in zip(ws, paths):
                save_png(to_uint8(G.synthesis(w.unsqueeze(0), noise_mode=noise_mode, force_fp32=force_fp32)), path)
        return paths

    label = make_label(G.c_dim, class_idx, dev)
    paths = _output_paths(outdir, [f'seed{seed:04d}.png' for seed in seed_list])
    os.makedirs(outdir, exist_ok=True)
    with torch.inference_mode():
        for idx, (seed, path) in enumerate(zip(seed_list, paths)):
            print(f'[{idx + 1}/{len(seed_list)}] seed {seed} -> {path}')
            z = seed_to_z(seed, G.z_dim, dev)
            img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode, force_fp32=force_fp32)
            save_png(to_uint8(img), path)
    return paths

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_images()  # arguments come from click

#----------------------------------------------------------------------------

"""`--batch-gpu=auto`: images per GPU per accumulation round chosen from the GPU's free memory.

Upstream's default `batch_gpu = mb // ref_gpus` is a memory rule for the 16 GB GPUs of 2020 (8
rounds of 8 at paper256 on one GPU). Fewer, larger rounds launch fewer kernels per image, which is
what a CPU-bound GPU loop needs. The rule (docs/benchmarks.md "batch_gpu=auto"):

    candidates = divisors d of batch/gpus that minibatch-std can split (d <= group or d % group == 0)
    memory(d)  = fixed + d * per_image, both measured by running the loss's four phases on copies of
                 G and D at two round sizes, a = the largest candidate <= max(group, 4) and the next
                 candidate b >= 2a (peak allocated bytes, linear fit; out of memory: the smallest)
    batch_gpu  = the largest candidate with memory(d) <= 0.85 * (free memory + memory held now)

The augmentation is built after batch_gpu is known, so it is not in the probe: methods that run D
several more times per round (DAG) need more than predicted; give them an explicit --batch-gpu.
Off CUDA, auto means one round of batch/gpus (the largest candidate).

A round's size is part of the math (minibatch-std groups, one style-mixing coin and one pl_mean
update per round, gradients summed over rounds), so `auto` is opt-in: a run that must match an
upstream run keeps the preset's batch_gpu.
"""

from __future__ import annotations

import copy

import torch

import dnnlib
from torch_utils import training_stats

HEADROOM = 0.85     # Share of the memory the rule may plan for (fragmentation, cuDNN workspaces).

#----------------------------------------------------------------------------

def valid_batch_gpus(batch_per_gpu: int, mbstd_group: int | None) -> list:
    group = mbstd_group or 1
    return [d for d in range(1, batch_per_gpu + 1) if batch_per_gpu % d == 0 and (d <= group or d % group == 0)]


def pick_batch_gpu(batch_per_gpu: int, mbstd_group: int | None, fixed_bytes: float, bytes_per_image: float, budget_bytes: float) -> int:
    """The largest valid round size whose predicted peak fits HEADROOM of the budget (else the smallest)."""
    candidates = valid_batch_gpus(batch_per_gpu, mbstd_group)
    fits = [d for d in candidates if fixed_bytes + d * bytes_per_image <= HEADROOM * budget_bytes]
    return max(fits) if fits else candidates[0]

#----------------------------------------------------------------------------
# Peak bytes of one round of every phase on copies of the nets (nothing of the run changes: its
# random streams, statistics, parameters, buffers and plugin state are left as they were).

def _cuda_peak(device, run) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def probe_peak_bytes(G, D, augment, loss_kwargs: dict, batch: int, device, measure=_cuda_peak) -> int:
    phase_names = ['Gmain', 'Greg', 'Dmain', 'Dreg']
    try:
        G, D, augment = copy.deepcopy((G, D, augment))  # one memo: the copied plugin hooks the copied D
    except (TypeError, RuntimeError):
        G, D, augment = copy.deepcopy(G), copy.deepcopy(D), None  # a plugin that cannot be copied: measured without it
    G.requires_grad_(True)
    D.requires_grad_(True)
    plugin = {} if augment is None else dict(augment=augment)  # None: the loss's own default (no augmentation)
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, **plugin, **loss_kwargs)
    real = torch.zeros([batch, G.img_channels, G.img_resolution, G.img_resolution], device=device)
    c = torch.zeros([batch, G.c_dim], device=device)
    def run():
        z = torch.randn([batch, G.z_dim], device=device)
        for name in phase_names:
            loss.accumulate_gradients(phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1)
    devices = [device] if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices), training_stats.discarded():
        return measure(device, run)


def auto_batch_gpu(G, D, augment, loss_kwargs: dict, batch_per_gpu: int, mbstd_group: int | None, device, fallback: int,
                   measure=_cuda_peak, budget_bytes=None) -> int:
    """batch_gpu for `--batch-gpu=auto`; `fallback` (the preset's) off CUDA."""
    if device.type != 'cuda' and budget_bytes is None:
        return fallback
    candidates = valid_batch_gpus(batch_per_gpu, mbstd_group)
    small = max(d for d in candidates if d <= max(mbstd_group or 1, 4))
    large = next((d for d in candidates if d >= 2 * small), None)
    if large is None:
        return small
    if budget_bytes is None:
        free, _total = torch.cuda.mem_get_info(device)
        budget_bytes = free + torch.cuda.memory_allocated(device)
    try:
        peaks = [probe_peak_bytes(G, D, augment, loss_kwargs, b, device, measure) for b in (small, large)]
    except torch.cuda.OutOfMemoryError:
        return candidates[0]
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    per_image = max(peaks[1] - peaks[0], 1) / (large - small)
    return pick_batch_gpu(batch_per_gpu, mbstd_group, peaks[0] - small * per_image, per_image, budget_bytes)

#----------------------------------------------------------------------------

"""Setup steps of the training loop, each one small function: device, data, networks, plugin, resume."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

import dnnlib
from training import checkpoint, distributed, run_state
from training.sampler import ResumableSampler

#----------------------------------------------------------------------------
# Device, seeds and backend flags. rank r uses cuda:r (cuda:LOCAL_RANK under torchrun); the CPU path exists for CI and demos.

def setup_device(device: str, rank: int, random_seed: int, num_gpus: int, cudnn_benchmark: bool, allow_tf32: bool, deterministic: bool) -> torch.device:
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('device=cuda but no CUDA GPU is visible; use --device=cpu or check CUDA_VISIBLE_DEVICES')
        dev = torch.device('cuda', distributed.local_device_index(rank))
        torch.cuda.set_device(dev)
    elif device == 'cpu':
        dev = torch.device('cpu')
    else:
        raise ValueError(f'device: expected "cuda" or "cpu", got {device!r}')
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
    torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    return dev

#----------------------------------------------------------------------------
# Dataset and an endless loader whose order restarts exactly at `start_batches` batches.

def setup_dataset(training_set_kwargs: dict):
    return dnnlib.util.construct_class_by_name(**training_set_kwargs)


def data_iterator(training_set, data_loader_kwargs: dict, rank: int, num_gpus: int, batch_size: int, random_seed: int, start_batches: int, device):
    batch_per_rank = batch_size // num_gpus
    sampler = ResumableSampler(training_set, rank=rank, num_replicas=num_gpus, seed=random_seed, start=start_batches * batch_per_rank)
    kwargs = dict(data_loader_kwargs)
    if kwargs.get('num_workers', 0) == 0:
        kwargs.pop('prefetch_factor', None)  # New torch rejects prefetch_factor without workers.
    if device.type != 'cuda':
        kwargs['pin_memory'] = False
    # Own generator: the loader must not consume the global RNG, which exact resume restores.
    generator = torch.Generator().manual_seed(random_seed)
    loader = torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_per_rank, generator=generator, **kwargs)
    return iter(loader)

#----------------------------------------------------------------------------
# G, D and G_ema in train mode with gradients off (phases switch them on).

def build_networks(training_set, G_kwargs: dict, D_kwargs: dict, device):
    common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    return G, D, G_ema

#----------------------------------------------------------------------------
# --batch-gpu=auto (training/batch_gpu.py): measured before the augmentation exists, so without
# it; rank 0 decides for all. Off CUDA: one round of batch/gpus unless it breaks minibatch-std.

def resolve_batch_gpu(G, D, loss_kwargs: dict, batch_size: int, num_gpus: int, D_kwargs: dict, device, say) -> int:
    from training import batch_gpu as rule
    per_gpu = batch_size // num_gpus
    mbstd = D_kwargs.get('epilogue_kwargs', {}).get('mbstd_group_size', 4)
    fallback = max(rule.valid_batch_gpus(per_gpu, mbstd))
    chosen = rule.auto_batch_gpu(G, D, None, loss_kwargs, per_gpu, mbstd, device, fallback) if distributed.get_rank() == 0 else None
    chosen = distributed.broadcast_object(chosen)
    say(f'batch_gpu=auto: {chosen} images per GPU per round ({per_gpu // chosen} rounds per phase)')
    return chosen

#----------------------------------------------------------------------------
# Upstream's G and D summary tables (rank 0). The forward pass would move w_avg, so G's buffers
# are put back afterwards: a run must not depend on whether it printed a summary.

def print_summaries(G, D, batch_gpu: int, device) -> None:
    from torch_utils import misc
    saved = {name: buf.clone() for name, buf in G.named_buffers()}
    z, c = (torch.zeros(batch_gpu, dim, device=device) for dim in (G.z_dim, G.c_dim))
    misc.print_module_summary(D, [misc.print_module_summary(G, [z, c]), c])
    with torch.no_grad():
        for name, buf in G.named_buffers():
            buf.copy_(saved[name])

#----------------------------------------------------------------------------
# The augmentation stack from the canonical spec.

def build_augment(spec: str, ctx):
    import asa_plugin
    stack = asa_plugin.create_augment_stack(spec, ctx)
    return stack.train().requires_grad_(False).to(ctx.device)

#----------------------------------------------------------------------------
# Weights from a snapshot pickle (rank 0 reads; the caller broadcasts): verified, then copied by
# name with a loud warning on any mismatch. Returns the pickle's plugin entry, if any.

def resume_networks(resume_pkl: str, G, D, G_ema, rank: int) -> dict | None:
    if rank != 0:
        return None
    import legacy
    checkpoint.check_snapshot(resume_pkl)
    print(f'Loading weights to resume from: {resume_pkl}')
    with dnnlib.util.open_url(resume_pkl) as f:
        resume_data = legacy.load_network_pkl(f)
    problems = []
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        problems += run_state.copy_by_name(resume_data[name], module, name)
    run_state.warn_mismatch(problems, resume_pkl)
    return resume_data.get('asa_plugin')

#----------------------------------------------------------------------------
# After construction and resume: rank 0's state everywhere (docs/compatibility.md §5.1).

def broadcast_all(G, D, G_ema, augment) -> None:
    for module in (G, D, G_ema, augment):
        distributed.broadcast_module(module)

#----------------------------------------------------------------------------

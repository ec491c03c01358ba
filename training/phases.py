"""Training phases (Gmain, Greg, Dmain, Dreg) and one iteration over them, with G_ema tracking.

Lazy regularization (StyleGAN2 Appendix C): a net with a reg interval gets two phases that share
one optimizer whose lr and betas are corrected for the skipped minibatches; without an interval
it gets a single `*both` phase.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

import dnnlib
from torch_utils import training_stats
from training import distributed, regularizers

#----------------------------------------------------------------------------

@dataclasses.dataclass
class Phase:
    name:       str                     # Gmain, Greg, Gboth, Dmain, Dreg, Dboth.
    module:     torch.nn.Module         # G or D, whose requires_grad is toggled.
    params:     list                    # Everything this phase's optimizer updates (incl. plugin params).
    opt:        torch.optim.Optimizer
    opt_name:   str                     # 'G' or 'D': key of the optimizer state.
    owns_opt:   bool                    # First phase of its net (saves the shared optimizer once).
    interval:   int                     # Runs when batch_idx % interval == 0; also the loss gain.
    timing:     list = dataclasses.field(default_factory=list)  # (start, end) of its last run: CUDA events or seconds.

#----------------------------------------------------------------------------

def build_phases(G, D, augment, G_opt_kwargs: dict, D_opt_kwargs: dict, G_reg_interval, D_reg_interval, fused: bool = True) -> list:
    phases = []
    nets = dict(G=(G, G_opt_kwargs, G_reg_interval), D=(D, D_opt_kwargs, D_reg_interval))
    for name, (module, opt_kwargs, reg_interval) in nets.items():
        params = list(module.parameters()) + augment.extra_parameters(name)
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        opt_kwargs.lr, opt_kwargs.betas = regularizers.lazy_reg_adjust(opt_kwargs.get('lr', 0.002), opt_kwargs.get('betas', (0, 0.99)), reg_interval)
        opt = make_optimizer(params, opt_kwargs, fused)
        if reg_interval is None:
            phases.append(Phase(name + 'both', module, params, opt, name, True, 1))
        else:
            phases.append(Phase(name + 'main', module, params, opt, name, True, 1))
            phases.append(Phase(name + 'reg', module, params, opt, name, False, reg_interval))
    return phases

# The optimizer of `opt_kwargs`; torch's Adam/AdamW as its fused kernel (one kernel for all
# parameters instead of several per tensor, and it can skip a step on a device-side flag, see
# training/nonfinite.py) when `fused` and this torch can run it on the parameters' device.
# Same update rule as the per-tensor Adam; the trajectories agree to float rounding (tests/test_fast_loop.py).

FUSABLE = ('torch.optim.Adam', 'torch.optim.AdamW')

def make_optimizer(params: list, opt_kwargs: dict, fused: bool = True) -> torch.optim.Optimizer:
    kwargs = dict(opt_kwargs)
    if kwargs.get('class_name') in FUSABLE and 'betas' in kwargs:
        kwargs['betas'] = tuple(float(b) for b in kwargs['betas'])  # New torch refuses a mix of int and float.
    if fused and kwargs.get('class_name') in FUSABLE and 'fused' not in kwargs and 'foreach' not in kwargs:
        try:
            return dnnlib.util.construct_class_by_name(params=params, **kwargs, fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass  # This torch or device has no fused kernel: the per-tensor optimizer below.
    return dnnlib.util.construct_class_by_name(params=params, **kwargs)

#----------------------------------------------------------------------------
# One batch of reals and one set of latents/labels per phase, split into batch_gpu rounds.

def fetch_batch(data_iter, training_set, phases: list, batch_gpu: int, z_dim: int, device) -> tuple:
    real_img, real_c = next(data_iter)
    real_img = (real_img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1).split(batch_gpu)
    real_c = real_c.to(device, non_blocking=True).split(batch_gpu)
    batch = sum(x.shape[0] for x in real_img)
    all_z = torch.randn([len(phases) * batch, z_dim], device=device).split(batch)
    labels = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch)]
    all_c = torch.from_numpy(np.stack(labels))
    if device.type == 'cuda':
        all_c = all_c.pin_memory().to(device, non_blocking=True)
    all_c = all_c.split(batch)
    gen = [(z.split(batch_gpu), c.split(batch_gpu)) for z, c in zip(all_z, all_c)]
    return real_img, real_c, gen

#----------------------------------------------------------------------------
# Runs every due phase: accumulate over rounds, average gradients over ranks, guarded step.

def run_phases(phases, loss, guard, batch, batch_idx: int, cur_nimg: int, device) -> None:
    real_img, real_c, gen = batch
    for phase, (gen_z, gen_c) in zip(phases, gen):
        if batch_idx % phase.interval != 0:
            continue
        start = _timestamp(device)
        phase.module.requires_grad_(True)
        for p in phase.params:
            p.requires_grad_(True)
        phase.opt.zero_grad(set_to_none=True)
        total = torch.zeros([], device=device)
        for round_idx, (img, c, z, gc) in enumerate(zip(real_img, real_c, gen_z, gen_c)):
            total += loss.accumulate_gradients(phase=phase.name, real_img=img, real_c=c, gen_z=z, gen_c=gc, gain=phase.interval,
                                               round_idx=round_idx)
        phase.module.requires_grad_(False)
        params = [p for p in phase.params if p.grad is not None]
        for p in phase.params:
            p.requires_grad_(False)
        distributed.all_reduce_grads(params)
        guard.step(phase.name, phase.opt, batch_idx, cur_nimg, total, params, device)
        phase.opt.zero_grad(set_to_none=True)
        phase.timing = [start, _timestamp(device)]


def _timestamp(device):
    if device.type == 'cuda':
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(device))
        return event
    return time.perf_counter()


# Milliseconds of each phase's last run (upstream's Timing/* stats); called once per tick.
def report_timings(phases: list) -> None:
    for phase in phases:
        if len(phase.timing) != 2:
            continue
        start, end = phase.timing
        if isinstance(start, float):
            value = (end - start) * 1000
        else:
            end.synchronize()
            value = start.elapsed_time(end)
        training_stats.report0(f'Timing/{phase.name}', value)

#----------------------------------------------------------------------------
# G_ema <- lerp(G, G_ema, beta) for parameters; buffers (w_avg, noise_const) copied verbatim.
# One fused call per list instead of a Python loop over every tensor (same lerp, same bits).

@torch.no_grad()
def update_ema(G, G_ema, beta: float) -> None:
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    if ema_params:
        torch._foreach_copy_(ema_params, torch._foreach_lerp(params, ema_params, beta))
    ema_buffers, buffers = list(G_ema.buffers()), list(G.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, buffers)

#----------------------------------------------------------------------------

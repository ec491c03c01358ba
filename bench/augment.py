"""Overhead of each augmentation method, measured side by side in one run.

    python bench/augment.py                       # CPU, 32 px, batch 16, markdown table
    python bench/augment.py --device=cuda --res=256 --batch=32

Two timings per spec, each the median over --reps rounds in which all specs run in turn
(so that machine load hits them alike), in ms (CPU: process CPU time; use --threads=1) and
relative to noaug's D step:
  augment  forward + backward of the stack's image hooks (mix_reals + augment) on the batch;
  D step   one Dmain-like step on a small StyleGAN2 D: real and fake passes through the stack,
           logit adjustment, extra losses (DAG heads, ...), backward, update.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import asa_plugin  # noqa: E402

# Specs measured by default: every method with settings that make it do its work at full cost.
DEFAULT_SPECS = ['noaug', 'ada:p=0.6', 'fixed:p=0.6', 'diffaug', 'apa:p=0.5,adaptive=false', 'dag', 'dag:rotation,cropping', 'asa',
                 'ada:p=0.6+apa:p=0.5,adaptive=false', 'apa:p=0.5,adaptive=false+diffaug', 'ada:p=0.6+dag']

#----------------------------------------------------------------------------

def build_D(res: int, c_dim: int, device):
    from training.networks import Discriminator
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=1024, channel_max=64,
                         epilogue_kwargs=dict(mbstd_group_size=4)).to(device).requires_grad_(True)

#----------------------------------------------------------------------------
# Wait for queued GPU work, so timings cover it.

def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

#----------------------------------------------------------------------------
# What 'augment' measures: the image hooks and their backward, nothing else.

def time_augment(stack, real, fake, c):
    img = real.clone().requires_grad_(True)
    mixed, mc = stack.mix_reals(img, c, lambda: (fake, c))
    out = stack.augment(mixed, mc)
    out.square().mean().backward()

#----------------------------------------------------------------------------
# What 'D step' measures: a Dmain-like step on the small D, through every hook.

def time_D_step(stack, D, real, fake, c):
    def run_D(img, cc, augment=True):
        if augment:
            img = stack.augment(img, cc)
        if stack.needs_features:
            return D(img, cc, return_features=True)
        return D(img, cc), None
    mixed, mc = stack.mix_reals(real, c, lambda: (fake, c))
    logits, feats = run_D(mixed, mc)
    stack.observe_real_logits(logits.detach())
    if feats is not None:
        stack.observe_features(feats.detach(), mc, 'real')
    loss = F.softplus(-stack.adjust_logits(logits, feats, mc, 'real', 'Dmain'))
    gen_logits, gen_feats = run_D(fake, c)
    if gen_feats is not None:
        stack.observe_features(gen_feats.detach(), c, 'fake')
    loss = loss + F.softplus(stack.adjust_logits(gen_logits, gen_feats, c, 'fake', 'Dmain'))
    extra = stack.extra_loss('Dmain', run_D, mixed, mc, fake, c)
    if extra is not None:
        loss = loss + extra
    loss.mean().backward()
    stack.update(real.shape[0], real.shape[0])

#----------------------------------------------------------------------------

def _timed(fn, device) -> float:
    # CPU: process CPU time, so that other jobs on a shared machine do not count; GPU: wall time.
    clock = time.perf_counter if device.type == 'cuda' else time.process_time
    _sync(device)
    t0 = clock()
    fn()
    _sync(device)
    return (clock() - t0) * 1000

#----------------------------------------------------------------------------

def run(specs, res=32, batch=16, reps=15, warmup=2, device='cpu', c_dim=0, seed=0) -> list:
    """``[(spec, augment ms, D step ms)]``, medians over ``reps`` interleaved rounds."""
    device = torch.device(device)
    torch.manual_seed(seed)
    D = build_D(res, c_dim, device)
    ctx = asa_plugin.PluginContext(device=device, c_dim=c_dim, img_resolution=res, img_channels=3,
                                   batch_size=batch, batch_gpu=batch, D=D)
    stacks = {spec: asa_plugin.create_augment_stack(spec, ctx).to(device) for spec in specs}
    real = torch.rand([batch, 3, res, res], device=device) * 2 - 1
    fake = torch.rand([batch, 3, res, res], device=device) * 2 - 1
    c = torch.eye(c_dim, device=device)[torch.arange(batch) % c_dim] if c_dim else torch.zeros([batch, 0], device=device)
    times = {spec: ([], []) for spec in specs}
    for rep in range(warmup + reps):
        for spec, stack in stacks.items():
            a = _timed(lambda: time_augment(stack, real, fake, c), device)
            d = _timed(lambda: time_D_step(stack, D, real, fake, c), device)
            D.zero_grad(set_to_none=True)
            if rep >= warmup:
                times[spec][0].append(a)
                times[spec][1].append(d)
    return [(spec, statistics.median(a), statistics.median(d)) for spec, (a, d) in times.items()]

#----------------------------------------------------------------------------
# The docs/benchmarks.md table.

def markdown(rows, base='noaug') -> str:
    ref = {spec: (a, d) for spec, a, d in rows}.get(base)
    lines = ['| --aug | augment fwd+bwd (ms) | augment / noaug D step | D step (ms) | D step ratio vs noaug |',
             '|---|---|---|---|---|']
    for spec, a, d in rows:
        ra = f'{100 * a / ref[1]:.0f}%' if ref else '-'
        rd = f'{d / ref[1]:.2f}x' if ref else '-'
        lines.append(f'| `{spec}` | {a:.2f} | {ra} | {d:.1f} | {rd} |')
    return '\n'.join(lines)

#----------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Overhead of each augmentation method (see the module docstring).')
    parser.add_argument('--specs', default=None, help='";"-separated --aug specs [default: every method and three combinations]')
    parser.add_argument('--res', type=int, default=32, help='image resolution [default: 32]')
    parser.add_argument('--batch', type=int, default=16, help='batch size [default: 16]')
    parser.add_argument('--reps', type=int, default=15, help='measured rounds [default: 15]')
    parser.add_argument('--cond', type=int, default=0, help='label dimension, 0 = unconditional [default: 0]')
    parser.add_argument('--device', default='cpu', help='cpu or cuda [default: cpu]')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads, 0 = torch default')
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    specs = [s.strip() for s in opts.specs.split(';') if s.strip()] if opts.specs else DEFAULT_SPECS
    if 'noaug' not in specs:
        specs = ['noaug'] + specs
    rows = run(specs, opts.res, opts.batch, opts.reps, device=opts.device, c_dim=opts.cond)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'device={opts.device} res={opts.res} batch={opts.batch} reps={opts.reps} cond={opts.cond} '
          f'threads={torch.get_num_threads()} torch={torch.__version__} load1={load:.1f}')
    print(markdown(rows))

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------

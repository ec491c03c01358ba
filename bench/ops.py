"""Micro-benchmark: fused CUDA ops against the reference ops (time and peak memory).

Times forward, forward+backward, and an R1-style double backward for bias_act and upfirdn2d at
a StyleGAN2 layer shape. On a CPU (or when the plugins do not build) only the reference runs.
`impl_report()` is printed so you can see which path really ran.

    python bench/ops.py                                  # CPU, reference only
    python bench/ops.py --device=cuda --dtype=float16    # fused vs reference on the GPU
    python bench/ops.py --device=cuda --batch=32 --res=128 --channels=256
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils import custom_ops                        # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d           # noqa: E402

#----------------------------------------------------------------------------
# The op cases: name -> function(x, impl). Shapes follow a synthesis/discriminator block.

def make_cases(channels, device):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    b = torch.randn(channels, device=device)
    return {
        'bias_act lrelu+clamp': lambda x, impl: bias_act.bias_act(x, b.to(x.dtype), act='lrelu', clamp=256, impl=impl),
        'bias_act swish':       lambda x, impl: bias_act.bias_act(x, b.to(x.dtype), act='swish', impl=impl),
        'upsample2d':           lambda x, impl: upfirdn2d.upsample2d(x, f, impl=impl),
        'downsample2d':         lambda x, impl: upfirdn2d.downsample2d(x, f, impl=impl),
    }

#----------------------------------------------------------------------------
# One measured pass of `mode`: 'fwd', 'fwd+bwd', or 'r1' (gradient with create_graph, then backward).

def run_once(fn, x, impl, mode):
    if mode == 'fwd':
        with torch.no_grad():
            return fn(x, impl)
    xg = x.detach().requires_grad_(True)
    y = fn(xg, impl)
    if mode == 'fwd+bwd':
        y.square().sum().backward()
        return None
    (g,) = torch.autograd.grad(y.square().sum(), [xg], create_graph=True)
    g.square().sum().backward()
    return None

def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

def measure(fn, x, impl, mode, iters, device):
    # Median wall time (ms) and peak extra memory (MiB; CUDA only) of `iters` passes after warm-up.
    for _ in range(2):
        run_once(fn, x, impl, mode)
    _sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run_once(fn, x, impl, mode)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == 'cuda' else float('nan')
    return statistics.median(times), peak

#----------------------------------------------------------------------------

@click.command()
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda')
@click.option('--dtype', type=click.Choice(['float32', 'float16']), default='float32', show_default=True)
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--channels', type=click.IntRange(min=1), default=64, show_default=True)
@click.option('--res', type=click.IntRange(min=4), default=32, show_default=True, help='Image size (px)')
@click.option('--iters', type=click.IntRange(min=1), default=10, show_default=True)
@click.option('--channels-last/--no-channels-last', default=False, show_default=True)
def main(device, dtype, batch, channels, res, iters, channels_last):
    """Time fused vs reference ops on the current device."""
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device=cuda: no CUDA GPU visible; use --device=cpu')
    if device.type == 'cpu' and dtype == 'float16':
        raise click.ClickException('--dtype=float16: use --device=cuda (CPU half convs are not representative)')
    torch.manual_seed(0)
    x = torch.randn([batch, channels, res, res], device=device, dtype=getattr(torch, dtype))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    impls = ['ref', 'cuda'] if device.type == 'cuda' else ['ref']
    print(f'device={device} dtype={dtype} x={list(x.shape)} channels_last={channels_last} iters={iters}')
    print(f'{"op":22s} {"mode":8s} ' + ' '.join(f'{i + " ms":>10s} {i + " MiB":>9s}' for i in impls) + '   speedup')
    for name, fn in make_cases(channels, device).items():
        for mode in ('fwd', 'fwd+bwd', 'r1'):
            cols, times = [], []
            for impl in impls:
                ms, mib = measure(fn, x, impl, mode, iters, device)
                times.append(ms)
                cols.append(f'{ms:10.3f} {mib:9.1f}')
            speed = f'{times[0] / times[1]:8.2f}x' if len(times) == 2 else '       -'
            print(f'{name:22s} {mode:8s} ' + ' '.join(cols) + f'  {speed}')
    print('impl_report:', custom_ops.impl_report())

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

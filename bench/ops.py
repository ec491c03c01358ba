"""Micro-benchmark: fused CUDA ops against the reference ops at StyleGAN2's real shapes.

For each shape, dtype/layout variant, op and mode it prints the median time of the reference and
of the fused op, the speed-up, peak extra memory, and the fused op's achieved bandwidth: the bytes
an ideal fused implementation must move (every input read once, every output written once; see
`ideal_traffic`) divided by its time, next to the GPU's peak DRAM bandwidth (spec sheet by device
name, or --bandwidth) and a measured device-to-device copy. Modes: `fwd`; `fwd+bwd` (x and b
require grad, backward with a fixed dy); `r1` (gradient with create_graph, then backward through
it, with dy requiring grad too, as inside D's R1 penalty). The goals of issue #15 are checked on the
`goal` column: bias_act fwd+bwd >= 2x the reference, upfirdn2d fwd and fwd+bwd >= 3x, both within
2x of the bandwidth bound.

    python bench/ops.py                                  # CPU smoke run: reference only, small shape
    python bench/ops.py --device=cuda                    # real shapes, fp32 and fp16 channels_last
    python bench/ops.py --device=cuda --shape=32x512x64 --variant=fp16-cl --bandwidth=3350
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gpu_bandwidth import spec_bandwidth_gbps     # noqa: E402
from torch_utils import custom_ops                        # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d           # noqa: E402

# Block shapes (batch x channels x resolution): G/D blocks at 64 px with 512 channels and at
# 128/256 px with 256/128 channels (StyleGAN2's channel_base 32768 / paper256's 16384 give these).
CUDA_SHAPES = ['32x512x64', '32x256x128', '32x128x256']
CPU_SHAPES = ['2x32x16']
VARIANTS = {'fp32': (torch.float32, False), 'fp16-cl': (torch.float16, True),
            'fp16': (torch.float16, False), 'fp32-cl': (torch.float32, True)}

#----------------------------------------------------------------------------
# The op cases. Each takes the block's [N, C, H, W] and device and returns (fn(x, b, impl), input
# shape, elements touched by one forward / backward / double-backward pass of an ideal kernel).

def _bias_act_case(act, clamp, double_backward_tensors):
    def case(n, c, h, w, device):  # pylint: disable=unused-argument
        numel = n * c * h * w
        fn = lambda x, b, impl: bias_act.bias_act(x, b, act=act, clamp=clamp, impl=impl)  # noqa: E731
        # fwd: x in, y out. bwd: dy and the saved y (or x) in, dx out (db reduced on the way).
        return fn, [n, c, h, w], (2 * numel, 3 * numel, double_backward_tensors * numel)
    return case

def _upfirdn2d_case(op, scale_in, scale_out):
    def case(n, c, h, w, device):
        f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
        fn = lambda x, b, impl: op(x, f, impl=impl)  # noqa: E731
        n_in, n_out = n * c * h * w * scale_in, n * c * h * w * scale_out
        # Linear op: every pass (forward, backward, double backward) reads one side and writes the other.
        shape = [n, c, int(h * scale_in ** 0.5), int(w * scale_in ** 0.5)]
        return fn, shape, (n_in + n_out, n_in + n_out, n_in + n_out)
    return case

# name -> (goal kind, case).
CASES = {
    # Every conv layer of G and D (fp16 layers clamp at 256). Double backward: d(dy) from d(dx), y.
    'bias_act lrelu c=256': ('bias_act', _bias_act_case('lrelu', 256, 3)),
    # The x-based path with a second derivative: d(dy) (3 tensors) and d(x) (d(dx), x, dy, out).
    'bias_act swish':       ('bias_act', _bias_act_case('swish', None, 7)),
    # conv2d_resample's blur after the transposed conv (G) and before the strided conv (D).
    'filter2d 4x4':         ('upfirdn2d', _upfirdn2d_case(
                                lambda x, f, impl: upfirdn2d.filter2d(x, f, padding=1, impl=impl), 1, 1)),
    # Skip paths: G's upsampled image/features, D's downsampled residual (block res = output res for up).
    'upsample2d':           ('upfirdn2d', _upfirdn2d_case(upfirdn2d.upsample2d, 0.25, 1)),
    'downsample2d':         ('upfirdn2d', _upfirdn2d_case(upfirdn2d.downsample2d, 1, 0.25)),
}
GOALS = {'bias_act': {'fwd+bwd': 2.0}, 'upfirdn2d': {'fwd': 3.0, 'fwd+bwd': 3.0}}   # min speed-up vs ref
BOUND_FACTOR = 2.0      # and at most this many times the bandwidth bound

def ideal_traffic(passes, mode, element_size):
    r"""Bytes an ideal implementation moves for `mode` given per-pass element counts (fwd, bwd, dbl)."""
    count = {'fwd': 1, 'fwd+bwd': 2, 'r1': 3}[mode]
    return sum(passes[:count]) * element_size

#----------------------------------------------------------------------------
# One measured pass of `mode`.

def run_once(fn, x, b, dy, ddx, impl, mode):
    if mode == 'fwd':
        with torch.no_grad():
            return fn(x, b, impl)
    xg, bg = x.detach().requires_grad_(True), b.detach().requires_grad_(True)
    if mode == 'fwd+bwd':
        fn(xg, bg, impl).backward(dy)
        return None
    dyg = dy.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xg, bg, impl), [xg], dyg, create_graph=True)
    g.backward(ddx)
    return None

def measure(run, iters, device):
    r"""(milliseconds per call, peak extra MiB). CUDA: back-to-back calls between two events, so
    launch overhead hides behind GPU work as it does in training; CPU: median of timed calls."""
    for _ in range(2):
        run()
    if device.type != 'cuda':
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), float('nan')
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters, (torch.cuda.max_memory_allocated(device) - base) / 2**20

def copy_bandwidth_gbps(device, nbytes=2**30):
    # Achievable DRAM bandwidth: a device-to-device copy reads and writes nbytes.
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms, _ = measure(lambda: dst.copy_(src), 10, device)
    return 2 * nbytes / (ms * 1e-3) / 1e9

#----------------------------------------------------------------------------

def _parse_shape(text):
    try:
        n, c, r = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise click.BadParameter(f'{text!r}: use NxCxR, e.g. 32x512x64 (batch x channels x resolution)') from None
    if min(n, c) < 1 or r < 4 or r % 4:
        raise click.BadParameter(f'{text!r}: need batch, channels >= 1 and a resolution divisible by 4')
    return n, c, r

def _num(value, width, digits, suffix=''):
    return f'{value:{width - len(suffix)}.{digits}f}{suffix}' if value is not None else f'{"-":>{width}s}'

def _goal(op_kind, mode, speedup, ms, bound_ms):
    need = GOALS[op_kind].get(mode)
    if need is None or speedup is None:
        return '-'
    return 'ok' if speedup >= need and ms <= BOUND_FACTOR * bound_ms else 'MISS'

def bench_block(shape, variant, iters, device, bandwidth):
    r"""Print one table (all cases x modes) for one block shape and variant; returns goal verdicts."""
    dtype, channels_last = VARIANTS[variant]
    n, c, r = shape
    impls = ['ref', 'cuda'] if device.type == 'cuda' else ['ref']
    size = torch.tensor([], dtype=dtype).element_size()
    print(f'\n== block {n}x{c}x{r} ({variant}: {str(dtype).replace("torch.", "")}, '
          f'{"channels_last" if channels_last else "contiguous"}) ==')
    print(f'{"op":22s} {"mode":8s} {"ref ms":>9s} {"fused ms":>9s} {"speedup":>8s} {"ref MiB":>8s} {"fused MiB":>9s} '
          f'{"ideal MB":>9s} {"GB/s":>7s} {"bound ms":>9s} {"x bound":>8s} goal')
    verdicts = []
    for name, (kind, case) in CASES.items():
        fn, in_shape, passes = case(n, c, r, r, device)
        x = torch.randn(in_shape, device=device, dtype=dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        b = torch.randn(in_shape[1], device=device, dtype=dtype)
        with torch.no_grad():
            y = fn(x, b, 'ref')
        dy, ddx = torch.randn_like(y), torch.randn_like(x)
        del y
        for mode in ('fwd', 'fwd+bwd', 'r1'):
            res = {impl: measure(lambda: run_once(fn, x, b, dy, ddx, impl, mode), iters, device) for impl in impls}
            ref_ms, ref_mib = res['ref']
            fused_ms, fused_mib = res.get('cuda', (None, float('nan')))
            nbytes = ideal_traffic(passes, mode, size)
            best_ms = fused_ms if fused_ms is not None else ref_ms
            bound_ms = nbytes / (bandwidth * 1e9) * 1e3 if bandwidth else None
            speedup = ref_ms / fused_ms if fused_ms else None
            goal = _goal(kind, mode, speedup, best_ms, bound_ms) if bound_ms else '-'
            verdicts.append(goal)
            print(f'{name:22s} {mode:8s} {ref_ms:9.3f} {_num(fused_ms, 9, 3)} {_num(speedup, 8, 2, "x")} '
                  f'{ref_mib:8.1f} {fused_mib:9.1f} {nbytes / 1e6:9.1f} {nbytes / (best_ms * 1e-3) / 1e9:7.1f} '
                  f'{_num(bound_ms, 9, 3)} {_num(best_ms / bound_ms if bound_ms else None, 8, 2, "x")} {goal}')
        del x, b, dy, ddx
    return verdicts

#----------------------------------------------------------------------------

@click.command()
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda')
@click.option('--shape', 'shapes', multiple=True, help=f'Block NxCxR; repeat [default: {" ".join(CUDA_SHAPES)} on '
              f'cuda, {" ".join(CPU_SHAPES)} on cpu]')
@click.option('--variant', 'variants', multiple=True, type=click.Choice(list(VARIANTS)),
              help='dtype/layout; repeat [default: fp32 fp16-cl on cuda, fp32 on cpu]')
@click.option('--iters', type=click.IntRange(min=1), default=10, show_default=True)
@click.option('--bandwidth', type=click.FloatRange(min=1), default=None,
              help='Peak DRAM bandwidth in GB/s [default: looked up from the GPU name]')
def main(device, shapes, variants, iters, bandwidth):
    """Time fused vs reference ops at real shapes and report achieved bandwidth."""
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device=cuda: no CUDA GPU visible; use --device=cpu')
    variants = variants or (['fp32', 'fp16-cl'] if device.type == 'cuda' else ['fp32'])
    if device.type == 'cpu' and any(VARIANTS[v][0] == torch.float16 for v in variants):
        raise click.ClickException('--variant=fp16*: use --device=cuda (CPU half convs are not representative)')
    shapes = [_parse_shape(s) for s in (shapes or (CUDA_SHAPES if device.type == 'cuda' else CPU_SHAPES))]
    torch.manual_seed(0)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        spec = spec_bandwidth_gbps(name)
        bandwidth = bandwidth or spec
        print(f'device: {name}; spec DRAM bandwidth: {f"{spec:.0f} GB/s" if spec else "unknown"}; '
              f'measured copy: {copy_bandwidth_gbps(device):.0f} GB/s; bound uses '
              f'{f"{bandwidth:.0f} GB/s" if bandwidth else "nothing (pass --bandwidth)"}')
    else:
        print(f'device: cpu (reference only){f"; bound uses {bandwidth:.0f} GB/s" if bandwidth else ""}')
    print(f'torch {torch.__version__}, iters={iters}; "ideal MB" = bytes a fused kernel must move, '
          f'"GB/s" = ideal MB / fused time (ref time without a fused op)')
    verdicts = []
    for shape in shapes:
        for variant in variants:
            verdicts += bench_block(shape, variant, iters, device, bandwidth)
    checked = [v for v in verdicts if v != '-']
    if checked:
        print(f'\ngoals met: {checked.count("ok")}/{len(checked)}')
    print('impl_report:', custom_ops.impl_report())

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

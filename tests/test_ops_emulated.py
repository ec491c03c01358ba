"""Our CUDA kernels, run on the CPU: the .cu kernel bodies compiled by the host C++ compiler.

A stand-in `cuda_runtime.h` (written to a temp dir) turns `__global__`/`__device__` into plain
C++ and `blockIdx`/`threadIdx` into globals; the launchers are `#ifdef __CUDACC__`, so g++ skips
them. Each emulated launch visits every (block, thread) pair of a small grid in turn, which also
checks the grid-stride loops. The kernels are then driven through the real Python autograd glue
(`_bias_act_cuda`, `_upfirdn2d_cuda`) and compared with the reference ops: forward, first and
second order, contiguous and channels_last. fp64 runs check the math exactly; fp32 and fp16 runs
(c10::Half storage with float arithmetic, as on the GPU) use the tolerance rule of
tests/test_ops_cuda.py (tests/_ops_tolerance.py). Each op is compiled with the nvcc flags its loader
really uses: under `--use_fast_math` the transcendental functions are replaced by models of the GPU's
approximate instructions at their documented error. This catches indexing, math, rounding and
backward-derivation bugs on machines without a GPU; tests/test_ops_cuda.py checks the real thing.
"""

import ctypes
import os
import shutil
import subprocess
from unittest import mock

import pytest
import torch

from _ops_tolerance import compare, value_grad_grad
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

OPS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'torch_utils', 'ops')
DTYPE_IDS = {torch.float32: 0, torch.float64: 1, torch.float16: 2}

FAKE_CUDA_RUNTIME = """#pragma once
#include <math.h>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct EmuDim { unsigned int x, y, z; };
static EmuDim blockIdx, threadIdx, blockDim, gridDim;
typedef int cudaError_t;
typedef void* cudaStream_t;
#ifdef EMU_FAST_MATH
// nvcc --use_fast_math turns tanhf into tanh.approx.f32 (documented worst case about 2^-11
// relative) and expf into __expf (2 + 1.173|x| ulp); model both at that worst case.
static inline float emu_fast_tanhf(float v) { int e; float m = frexpf(tanhf(v), &e); return ldexpf(nearbyintf(ldexpf(m, 11)), e - 11); }
static inline float emu_fast_expf(float v) { return expf(v) * (1.0f + (2.0f + floorf(1.173f * fabsf(v))) * 5.9604645e-8f); }
#define tanhf(v) emu_fast_tanhf(v)
#define expf(v) emu_fast_expf(v)
#endif
"""

# One library per op, so that each is compiled with its own loader's flags.
GLUE = {
    'bias_act': """#include "cuda_runtime.h"
#include "%(ops)s/bias_act.cu"
%(each_thread)s
template <class T> static void run(const BiasActParams* p, long long narrow_limit) {   // the launcher's kernel choice
    bias_act_dispatch<T>(*p, [&](BiasActKernel kernel, int) { each_thread(3, 1, 1, 5, 1, [&] { kernel(*p); }); }, narrow_limit);
}
extern "C" void emu_bias_act(int dtype, const BiasActParams* p, long long narrow_limit) {
    if (dtype == 0) run<float>(p, narrow_limit); else if (dtype == 1) run<double>(p, narrow_limit); else run<c10::Half>(p, narrow_limit);
}
""",
    'upfirdn2d': """#include "cuda_runtime.h"
#include "%(ops)s/upfirdn2d.cu"
%(each_thread)s
extern "C" void emu_upfirdn2d(int dtype, const Upfirdn2dParams* p) {
    each_thread(2, 3, 2, 4, 2, [&] { if (dtype == 0) upfirdn2d_kernel<float>(*p); else if (dtype == 1) upfirdn2d_kernel<double>(*p);
                                     else upfirdn2d_kernel<c10::Half>(*p); });
}
"""}

EACH_THREAD = """// A small grid (blocks gx x gy x gz of bx x by threads), one thread at a time: the kernels'
// grid-stride loops must cover everything.
template <class F> static void each_thread(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, F run) {
    gridDim = {gx, gy, gz}; blockDim = {bx, by, 1}; threadIdx.z = 0;
    for (blockIdx.z = 0; blockIdx.z < gz; blockIdx.z++) for (blockIdx.y = 0; blockIdx.y < gy; blockIdx.y++)
        for (blockIdx.x = 0; blockIdx.x < gx; blockIdx.x++) for (threadIdx.y = 0; threadIdx.y < by; threadIdx.y++)
            for (threadIdx.x = 0; threadIdx.x < bx; threadIdx.x++) run();
}"""

#----------------------------------------------------------------------------
# ctypes mirrors of the parameter structs in bias_act.h / upfirdn2d.h (same field order).

class BiasActParams(ctypes.Structure):
    _fields_ = [('g', ctypes.c_void_p), ('b', ctypes.c_void_p), ('xref', ctypes.c_void_p), ('yref', ctypes.c_void_p),
                ('dy', ctypes.c_void_p), ('out', ctypes.c_void_p), ('numel', ctypes.c_longlong),
                ('bias_stride', ctypes.c_longlong), ('bias_size', ctypes.c_int), ('mode', ctypes.c_int),
                ('act', ctypes.c_int), ('alpha', ctypes.c_double), ('gain', ctypes.c_double), ('clamp', ctypes.c_double)]

class Upfirdn2dParams(ctypes.Structure):
    _fields_ = [('x', ctypes.c_void_p), ('f', ctypes.c_void_p), ('y', ctypes.c_void_p)] + \
        [(n, ctypes.c_int) for n in ('batch', 'channels', 'in_h', 'in_w', 'out_h', 'out_w')] + \
        [('x_stride', ctypes.c_longlong * 4), ('y_stride', ctypes.c_longlong * 4)] + \
        [(n, ctypes.c_int) for n in ('up_x', 'up_y', 'down_x', 'down_y', 'pad_x0', 'pad_y0', 'filter_w', 'filter_h',
                                     'flip_filter')] + [('gain', ctypes.c_float)]

def _ptr(t):
    return t.data_ptr() if t.numel() else None

#----------------------------------------------------------------------------
# Stand-in for the compiled plugin: same entry points and checks as the .cpp bindings.

class EmulatedPlugin:
    def __init__(self, libs):
        self.libs = libs        # op name -> ctypes library
        self.narrow_limit = 1 << 31     # bias_act uses 32-bit indices below this many elements

    def bias_act(self, mode, g, b, xref, yref, dy, dim, act, alpha, gain, clamp):
        for t in (xref, yref, dy):
            assert t.numel() == 0 or (t.shape == g.shape and t.stride() == g.stride() and t.dtype == g.dtype)
        out = torch.empty_like(g)
        p = BiasActParams(_ptr(g), _ptr(b), _ptr(xref), _ptr(yref), _ptr(dy), _ptr(out), g.numel(),
                          max(g.stride(dim), 1), g.shape[dim], mode, act, alpha, gain, clamp)
        self.libs['bias_act'].emu_bias_act(DTYPE_IDS[g.dtype], ctypes.byref(p), ctypes.c_longlong(self.narrow_limit))
        return out

    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
        assert f.dtype == torch.float32 and f.ndim == 2 and f.is_contiguous()
        fh, fw = f.shape
        oh = (x.shape[2] * upy + pady0 + pady1 - fh) // downy + 1
        ow = (x.shape[3] * upx + padx0 + padx1 - fw) // downx + 1
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        y = torch.empty([x.shape[0], x.shape[1], oh, ow], dtype=x.dtype,
                        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        p = Upfirdn2dParams(_ptr(x), f.data_ptr(), _ptr(y), *x.shape, oh, ow, (ctypes.c_longlong * 4)(*x.stride()),
                            (ctypes.c_longlong * 4)(*y.stride()), upx, upy, downx, downy, padx0, pady0, fw, fh,
                            int(flip), gain)
        self.libs['upfirdn2d'].emu_upfirdn2d(DTYPE_IDS[x.dtype], ctypes.byref(p))
        return y

#----------------------------------------------------------------------------

def _loader_cuda_flags(module):
    # The extra nvcc flags the op's real loader builds with (its get_plugin call, intercepted).
    seen = dict()
    with mock.patch.object(custom_ops, 'get_plugin', lambda **kwargs: seen.update(kwargs)):
        module._load_plugin()
    return list(seen.get('extra_cuda_cflags', []))

def _compile(cxx, work, op, defines):
    (work / f'{op}.cpp').write_text(GLUE[op] % dict(ops=OPS_DIR, each_thread=EACH_THREAD))
    torch_include = os.path.join(os.path.dirname(torch.__file__), 'include')
    lib_path = str(work / f'lib{op}.so')
    proc = subprocess.run([cxx, '-O1', '-shared', '-fPIC', '-std=c++17', f'-I{work}', '-isystem', torch_include,
                           *defines, str(work / f'{op}.cpp'), '-o', lib_path], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f'host compile of the {op} kernel failed:\n{proc.stderr[-3000:]}'
    return ctypes.CDLL(lib_path)

@pytest.fixture(scope='module')
def emulated(tmp_path_factory):
    cxx = shutil.which('c++') or shutil.which('g++')
    if cxx is None:
        pytest.skip('no host C++ compiler')
    work = tmp_path_factory.mktemp('emu')
    (work / 'cuda_runtime.h').write_text(FAKE_CUDA_RUNTIME)
    libs = dict()
    for op, module in [('bias_act', bias_act), ('upfirdn2d', upfirdn2d)]:
        fast = '--use_fast_math' in _loader_cuda_flags(module)
        libs[op] = _compile(cxx, work, op, ['-DEMU_FAST_MATH'] if fast else [])
    plugin = EmulatedPlugin(libs)
    saved = dict(custom_ops._op_plugins)
    custom_ops._op_plugins.update(bias_act=plugin, upfirdn2d=plugin)
    yield plugin
    custom_ops._op_plugins.clear()
    custom_ops._op_plugins.update(saved)

#----------------------------------------------------------------------------
# fp64: the kernels' math must equal the reference's up to rounding.

def _assert_all_close(got, expect, rel):
    for i, (a, b) in enumerate(zip(got, expect)):
        scale = max(b.double().abs().max().item(), 1.0)
        err = (a.double() - b.double()).abs().max().item()
        assert err <= rel * scale, f'output {i}: max error {err:.3g} (scale {scale:.3g})'

#----------------------------------------------------------------------------

@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.7])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last', 'fc'])
def test_emulated_bias_act_matches_reference(emulated, act, clamp, layout):
    # Bias strides 3 (neither 1 nor a multiple of the pack size), 1 (channels_last) and 1 (fc, odd numel).
    dim, shape = {'nchw': (2, [2, 3, 5, 3]), 'channels_last': (1, [2, 5, 3, 4]), 'fc': (1, [4, 7])}[layout]
    x = torch.randn(shape, dtype=torch.float64) * 2
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    b = torch.randn(shape[dim], dtype=torch.float64)
    kwargs = dict(dim=dim, act=act, alpha=0.3, gain=0.6, clamp=clamp)
    fused = value_grad_grad(lambda x, b: bias_act._bias_act_cuda(**kwargs).apply(bias_act._dense(x), b), [x, b])
    ref = value_grad_grad(lambda x, b: bias_act._bias_act_ref(x, b, **kwargs), [x, b])
    _assert_all_close(fused, ref, 1e-9)
    if layout == 'channels_last':
        assert fused[0].is_contiguous(memory_format=torch.channels_last)

@pytest.mark.parametrize('variant', ['misaligned', 'wide_index'])
@pytest.mark.parametrize('act', ['lrelu', 'swish'])
def test_emulated_bias_act_kernel_variants(emulated, variant, act, monkeypatch):
    # The launcher's other instantiations: one-element accesses when a tensor starts off a 16-byte
    # boundary (a view one element into its storage), and 64-bit indices (beyond 2^31 elements).
    x = torch.randn(2 * 5 * 3 * 4 + 1, dtype=torch.float64)
    x = x[1:].view(2, 5, 3, 4) if variant == 'misaligned' else x[:-1].view(2, 5, 3, 4)
    if variant == 'wide_index':
        monkeypatch.setattr(emulated, 'narrow_limit', 0)
    b = torch.randn(5, dtype=torch.float64)
    kwargs = dict(act=act, alpha=0.3, gain=0.6, clamp=0.7)
    fused = value_grad_grad(lambda x, b: bias_act._bias_act_cuda(**kwargs).apply(x, b), [x, b])
    ref = value_grad_grad(lambda x, b: bias_act._bias_act_ref(x, b, **kwargs), [x, b])
    _assert_all_close(fused, ref, 1e-9)

#----------------------------------------------------------------------------
# fp32 and fp16 under the GPU tests' tolerance rule: every activation, with and without clamp,
# value, first and second order (the inputs and rule of tests/test_ops_cuda.py).

def _fused_or_ref(**kwargs):
    def fn(impl, x, b):
        if impl == 'ref':
            return bias_act._bias_act_ref(x, b, **kwargs)
        return bias_act._bias_act_cuda(**kwargs).apply(bias_act._dense(x), b)
    return fn

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.8])
def test_emulated_bias_act_low_precision(emulated, dtype, act, clamp):
    x = torch.randn(4, 16, 8, 8, dtype=torch.float64)
    b = torch.randn(16, dtype=torch.float64)
    compare(_fused_or_ref(act=act, clamp=clamp), [x, b], dtype, f'bias_act[{act}, clamp={clamp}]')

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_emulated_bias_act_training_clamp(emulated, dtype):
    # The generator's fp16 layers: lrelu, gain sqrt(2), conv_clamp=256, channels_last. Half's ulp
    # below 256 is 0.125: one row per channel puts gain * (x + b) in steps of sqrt(2)/8 around the
    # clamp (181 * sqrt(2) = 255.97 rounds onto 256), the rest spreads far beyond it. All exact in fp16.
    b = torch.randint(-8, 9, [32]).double() / 8
    x = torch.randn(2, 32, 8, 8, dtype=torch.float64) * 200
    x[:, :, 0, :] = 181 - b[:, None] + (torch.arange(8, dtype=torch.float64) - 4) / 8
    x = x.to(memory_format=torch.channels_last)
    compare(_fused_or_ref(act='lrelu', clamp=256), [x, b], dtype, 'bias_act[lrelu, clamp=256]')

#----------------------------------------------------------------------------

@pytest.mark.parametrize('up,down,padding', [
    (1, 1, [1, 2, 1, 2]), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (2, 2, [1, 2, 0, 3]),
    ([2, 1], [1, 3], [2, -1, 0, 1]), ([3, 2], [2, 1], [-1, 2, 2, -1]), (4, 4, [5, 6, 7, 8])])
@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [[1, 2, 0], [4, -1, 3]], list(range(1, 10))])
@pytest.mark.parametrize('flip', [False, True])
def test_emulated_upfirdn2d_matches_reference(emulated, up, down, padding, taps, flip):
    f = upfirdn2d.setup_filter(taps, normalize=False)
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    if flip:
        x = x.to(memory_format=torch.channels_last)
    args = dict(up=upfirdn2d._parse_scaling(up), down=upfirdn2d._parse_scaling(down),
                padding=upfirdn2d._parse_padding(padding), flip_filter=flip, gain=1.3)
    fused = value_grad_grad(lambda x: upfirdn2d._upfirdn2d_cuda(**args).apply(x, f), [x])
    ref = value_grad_grad(lambda x: upfirdn2d._upfirdn2d_ref(x, f, **args), [x])
    _assert_all_close(fused, ref, 1e-6)   # separable taps: float32 per-pass sqrt(gain) in the reference

def test_emulated_upfirdn2d_gradgradcheck(emulated):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    op = upfirdn2d._upfirdn2d_cuda(up=(2, 2), down=(1, 1), padding=(2, 1, 2, 1), flip_filter=False, gain=4.0)
    assert torch.autograd.gradgradcheck(lambda x: op.apply(x, f), (x,), fast_mode=True)

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('up,down,padding', [(2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), ([2, 1], [1, 3], [2, -1, 0, 1])])
def test_emulated_upfirdn2d_low_precision(emulated, dtype, up, down, padding):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    args = dict(up=upfirdn2d._parse_scaling(up), down=upfirdn2d._parse_scaling(down),
                padding=upfirdn2d._parse_padding(padding), flip_filter=False, gain=1.7)
    fn = lambda impl, x: (upfirdn2d._upfirdn2d_ref(x, f, **args) if impl == 'ref'  # noqa: E731
                          else upfirdn2d._upfirdn2d_cuda(**args).apply(x, f))
    x = torch.randn(2, 8, 13, 11, dtype=torch.float64).to(memory_format=torch.channels_last)
    compare(fn, [x], dtype, f'upfirdn2d[up={up}, down={down}, pad={padding}]')

#----------------------------------------------------------------------------

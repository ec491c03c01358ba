"""Fused CUDA kernels against the reference ops: forward, first and second order, fp32 and fp16,
under the tolerance rule of tests/_ops_tolerance.py (tests/test_ops_emulated.py applies the same
rule to the kernel bodies compiled for the CPU).
Strict mode is on, so a kernel that fails to build fails these tests instead of hiding behind
the reference path.
"""

import pytest
import torch

from _ops_tolerance import compare as _compare
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

pytestmark = pytest.mark.cuda

@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    monkeypatch.setenv(custom_ops.STRICT_ENV, '1')

#----------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.8])
def test_bias_act_fused_matches_reference(dtype, act, clamp):
    x = torch.randn(4, 16, 8, 8, device='cuda', dtype=torch.float64)
    b = torch.randn(16, device='cuda', dtype=torch.float64)
    fn = lambda impl, x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl=impl)  # noqa: E731
    _compare(fn, [x, b], dtype, f'bias_act[{act}, clamp={clamp}]')
    assert custom_ops.impl_report()['bias_act'] == 'cuda'

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_bias_act_training_shapes_and_channels_last(dtype):
    x = torch.randn(8, 64, 32, 32, device='cuda', dtype=dtype).to(memory_format=torch.channels_last)
    b = torch.randn(64, device='cuda', dtype=dtype)
    y = bias_act.bias_act(x, b, act='lrelu', clamp=256, impl='cuda')
    assert y.is_contiguous(memory_format=torch.channels_last)
    fn = lambda impl, x, b: bias_act.bias_act(x, b, act='lrelu', gain=1.4, clamp=2.0, impl=impl)  # noqa: E731
    _compare(fn, [x.double(), b.double()], dtype, 'bias_act[lrelu, channels_last]')
    fc = lambda impl, x, b: bias_act.bias_act(x, b, dim=1, act='linear', impl=impl)  # noqa: E731
    _compare(fc, [torch.randn(16, 512, device='cuda'), torch.randn(512, device='cuda')], dtype, 'bias_act[fc]')

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_bias_act_training_clamp(dtype):
    # conv_clamp=256 in fp16, with values in steps of sqrt(2)/8 around the clamp (see the emulated twin).
    b = torch.randint(-8, 9, [32], device='cuda').double() / 8
    x = torch.randn(2, 32, 8, 8, device='cuda', dtype=torch.float64) * 200
    x[:, :, 0, :] = 181 - b[:, None] + (torch.arange(8, device='cuda', dtype=torch.float64) - 4) / 8
    fn = lambda impl, x, b: bias_act.bias_act(x, b, act='lrelu', clamp=256, impl=impl)  # noqa: E731
    _compare(fn, [x.to(memory_format=torch.channels_last), b], dtype, 'bias_act[lrelu, clamp=256]')

#----------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('up,down,padding', [
    (1, 1, [1, 2, 1, 2]), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (2, 2, [1, 2, 0, 3]),
    ([2, 1], [1, 3], [2, -1, 0, 1]), (4, 1, [3, 0, 3, 0])])
@pytest.mark.parametrize('taps', [[1, 3, 3, 1], list(range(1, 13))])
@pytest.mark.parametrize('flip', [False, True])
def test_upfirdn2d_fused_matches_reference(dtype, up, down, padding, taps, flip):
    f = upfirdn2d.setup_filter(taps, device='cuda')
    x = torch.randn(2, 8, 13, 11, device='cuda', dtype=torch.float64)
    fn = lambda impl, x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding,  # noqa: E731
                                             flip_filter=flip, gain=1.7, impl=impl)
    _compare(fn, [x], dtype, f'upfirdn2d[up={up}, down={down}, pad={padding}]')
    assert custom_ops.impl_report()['upfirdn2d'] == 'cuda'

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_upfirdn2d_wrappers_training_shapes(dtype):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
    x = torch.randn(8, 64, 32, 32, device='cuda', dtype=torch.float64)
    for name, fn in [('upsample2d', lambda impl, x: upfirdn2d.upsample2d(x, f, impl=impl)),
                     ('downsample2d', lambda impl, x: upfirdn2d.downsample2d(x, f, impl=impl)),
                     ('filter2d', lambda impl, x: upfirdn2d.filter2d(x, f, padding=1, impl=impl))]:
        _compare(fn, [x], dtype, name)
    xcl = x.to(dtype).to(memory_format=torch.channels_last)
    assert upfirdn2d.upsample2d(xcl, f).is_contiguous(memory_format=torch.channels_last)

#----------------------------------------------------------------------------

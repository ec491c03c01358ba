"""Fused CUDA kernels against the reference ops: forward, first and second order, fp32 and fp16.

Tolerance rule (flash-attention style): the fused result's error against the fp64 reference may be
at most K times the error of the reference op run in the same low precision, plus a small floor
(fast-math intrinsics in fp32).
Strict mode is on, so a kernel that fails to build fails these tests instead of hiding behind
the reference path.
"""

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

pytestmark = pytest.mark.cuda
K = 2.0
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3}     # relative to the fp64 result's max magnitude

@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    monkeypatch.setenv(custom_ops.STRICT_ENV, '1')

#----------------------------------------------------------------------------
# Forward value, input gradient(s) and an R1-style second-order gradient of `fn` at `inputs`.

def _value_grad_grad(fn, inputs, seed=0):
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    g = torch.Generator(device=y.device).manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * dy).sum(), inputs, create_graph=True)
    penalty = sum(gr.double().square().sum() for gr in grads)
    grads2 = torch.autograd.grad(penalty, inputs, allow_unused=True) if penalty.requires_grad else [None] * len(inputs)
    grads2 = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(inputs, grads2)]
    return [y.detach()] + [gr.detach() for gr in grads] + list(grads2)

def _assert_close_to_gold(fused, lowp_ref, gold, dtype, what):
    for i, (a, r, g) in enumerate(zip(fused, lowp_ref, gold)):
        g = g.double()
        scale = g.abs().max().item() + 1e-12
        err = (a.double() - g).abs().max().item()
        base = (r.double() - g).abs().max().item()
        assert err <= K * base + FLOOR[dtype] * scale, \
            f'{what} output {i}: fused error {err:.3g} > {K} x reference error {base:.3g} (scale {scale:.3g})'

def _compare(fn_impl, inputs, dtype, what):
    # Gold: fp64 reference on the same (rounded) inputs, so only the arithmetic's error counts.
    gold = _value_grad_grad(lambda *a: fn_impl('ref', *a), [t.to(dtype).double() for t in inputs])
    lowp = _value_grad_grad(lambda *a: fn_impl('ref', *a), [t.to(dtype) for t in inputs])
    fused = _value_grad_grad(lambda *a: fn_impl('cuda', *a), [t.to(dtype) for t in inputs])
    _assert_close_to_gold(fused, lowp, gold, dtype, what)

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

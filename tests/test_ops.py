"""Reference ops (torch_utils/ops) against direct formulas, plus first/second-order gradient checks."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, conv2d_gradfix, conv2d_resample, fma, grid_sample_gradfix, upfirdn2d

F64 = torch.float64

#----------------------------------------------------------------------------
# bias_act: table values, formulas per activation, gain/clamp, gradients.

def test_activation_table_matches_upstream():
    expected = {  # name: (def_alpha, def_gain, cuda_idx, ref, has_2nd_grad)
        'linear': (0, 1, 1, '', False), 'relu': (0, math.sqrt(2), 2, 'y', False),
        'lrelu': (0.2, math.sqrt(2), 3, 'y', False), 'tanh': (0, 1, 4, 'y', True),
        'sigmoid': (0, 1, 5, 'y', True), 'elu': (0, 1, 6, 'y', True), 'selu': (0, 1, 7, 'y', True),
        'softplus': (0, 1, 8, 'y', True), 'swish': (0, math.sqrt(2), 9, 'x', True)}
    assert set(bias_act.activation_funcs) == set(expected)
    for name, (alpha, gain, idx, ref, second) in expected.items():
        spec = bias_act.activation_funcs[name]
        assert (spec.def_alpha, spec.cuda_idx, spec.ref, spec.has_2nd_grad) == (alpha, idx, ref, second)
        assert spec.def_gain == pytest.approx(gain) and spec['def_gain'] == spec.def_gain

def _act_formula(name, z, alpha):
    # Activations written out from their textbook definitions (numpy, float64).
    sig = 1 / (1 + np.exp(-z))
    return {
        'linear': z, 'relu': np.maximum(z, 0), 'lrelu': np.where(z > 0, z, alpha * z), 'tanh': np.tanh(z),
        'sigmoid': sig, 'elu': np.where(z > 0, z, np.exp(z) - 1),
        'selu': 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(z) - 1)),
        'softplus': np.log1p(np.exp(z)), 'swish': z * sig}[name]

@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
@pytest.mark.parametrize('dim', [1, 2])
def test_bias_act_ref_matches_formula(act, dim):
    x = torch.randn(2, 3, 4, 5, dtype=F64) * 2
    b = torch.randn(x.shape[dim], dtype=F64)
    shape = [-1 if i == dim else 1 for i in range(4)]
    z = (x + b.reshape(shape)).numpy()
    spec = bias_act.activation_funcs[act]
    y = bias_act.bias_act(x, b, dim=dim, act=act, impl='ref')
    np.testing.assert_allclose(y.numpy(), _act_formula(act, z, spec.def_alpha) * spec.def_gain, rtol=1e-12, atol=1e-12)
    y = bias_act.bias_act(x, b, dim=dim, act=act, alpha=0.3, gain=0.7, clamp=0.4)
    expect = np.clip(_act_formula(act, z, 0.3) * 0.7, -0.4, 0.4)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-12, atol=1e-12)

def test_bias_act_keeps_shape_dtype_layout_and_validates():
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    y = bias_act.bias_act(x, torch.zeros(4), act='lrelu')
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(bias_act.bias_act(x), x)                  # linear, no bias, gain 1: identity
    with pytest.raises(ValueError, match='act'):
        bias_act.bias_act(x, act='gelu')
    with pytest.raises(ValueError, match='entries'):
        bias_act.bias_act(x, torch.zeros(3))
    with pytest.raises(ValueError, match='impl'):
        bias_act.bias_act(x, impl='triton')

@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
def test_bias_act_ref_gradcheck_twice(act):
    x = (torch.randn(2, 3, 2, 2, dtype=F64) * 2).requires_grad_(True)
    b = torch.randn(3, dtype=F64).requires_grad_(True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)

#----------------------------------------------------------------------------
# upfirdn2d: against zero insertion + np.pad + scipy convolve2d + striding, written independently.

def _upfirdn2d_direct(x, f, up, down, pad, flip, gain):
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    xu = np.zeros([n, c, h * upy, w * upx])
    xu[:, :, ::upy, ::upx] = x
    xu = np.pad(xu, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    xu = xu[:, :, max(-py0, 0): xu.shape[2] - max(-py1, 0), max(-px0, 0): xu.shape[3] - max(-px1, 0)]
    f2 = f if f.ndim == 2 else np.outer(f, f)
    f2 = f2[::-1, ::-1] if flip else f2                 # correlation = convolution with flipped taps
    out = np.stack([np.stack([scipy.signal.convolve2d(xu[i, j], f2, mode='valid') for j in range(c)]) for i in range(n)])
    return out[:, :, ::downy, ::downx] * gain

@pytest.mark.parametrize('up,down,pad', [
    (1, 1, 0), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (2, 2, [1, 2, 0, 3]),
    ([2, 1], [1, 3], [2, -1, 0, 1]), (3, 2, [-1, 2, 2, -1]), (1, 1, [3, 0, -2, 1])])
@pytest.mark.parametrize('flip', [False, True])
@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [[1, 2, 0], [4, -1, 3]], list(range(1, 9))])
def test_upfirdn2d_ref_matches_direct(up, down, pad, flip, taps):
    x = torch.randn(2, 3, 10, 9, dtype=F64)
    f = upfirdn2d.setup_filter(taps, normalize=False)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5, impl='ref')
    expect = _upfirdn2d_direct(x.numpy(), f.double().numpy(), upfirdn2d._parse_scaling(up),
                               upfirdn2d._parse_scaling(down), upfirdn2d._parse_padding(pad), flip, 1.5)
    assert y.shape == expect.shape
    scale = np.abs(expect).max()      # separable taps carry a float32-rounded sqrt(gain) per pass
    np.testing.assert_allclose(y.numpy(), expect, rtol=0, atol=1e-6 * scale)

def test_setup_filter_rules():
    assert torch.equal(upfirdn2d.setup_filter(None), torch.ones([1, 1]))
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32 and f.sum().item() == pytest.approx(1)
    assert upfirdn2d.setup_filter(list(range(1, 9))).ndim == 1          # >= 8 taps stay separable
    g = upfirdn2d.setup_filter([1, 2, 3], gain=4, flip_filter=True)
    assert g.sum().item() == pytest.approx(4) and g[0, 0] > g[-1, -1]
    assert upfirdn2d.setup_filter([1, 2], separable=True, gain=4).sum().item() == pytest.approx(2)
    assert upfirdn2d._get_filter_size(g) == (3, 3) and upfirdn2d._get_filter_size(None) == (1, 1)
    assert upfirdn2d._parse_padding(np.int64(2)) == (2, 2, 2, 2)
    assert upfirdn2d._parse_padding([1, 2]) == (1, 1, 2, 2)
    with pytest.raises(ValueError, match='padding'):
        upfirdn2d._parse_padding([1, 2, 3])

def test_resample_wrappers_shapes_and_dc_gain():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 3.0)
    up = upfirdn2d.upsample2d(x, f)
    down = upfirdn2d.downsample2d(x, f)
    same = upfirdn2d.filter2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4) and same.shape == x.shape
    for y in (up, down, same):                                    # a constant image stays constant inside
        assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 3.0), atol=1e-5)
    with pytest.raises(ValueError, match='grad'):
        upfirdn2d.upfirdn2d(x, f.clone().requires_grad_(True))

@pytest.mark.parametrize('up,down,pad', [(2, 1, [2, 1, 2, 1]), (1, 2, 1), (2, 2, [0, 1, 2, -1])])
def test_upfirdn2d_ref_gradcheck_twice(up, down, pad):
    x = torch.randn(1, 1, 4, 3, dtype=F64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 2, 1])
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)

#----------------------------------------------------------------------------
# conv2d_resample: every fast path against "FIR-upsample (with padding) -> conv -> FIR-downsample".

def _conv2d_resample_composed(x, w, f, up, down, padding, groups, flip_weight):
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    fw, fh = upfirdn2d._get_filter_size(f)
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    x = upfirdn2d.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
    x = torch.nn.functional.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    return upfirdn2d.upfirdn2d(x, f, down=down) if down > 1 else x

@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize('padding', [0, 1, [1, 0, 2, 1]])
def test_conv2d_resample_matches_composition(k, groups, up, down, padding):
    x = torch.randn(2, 4, 6, 7, dtype=F64)
    w = torch.randn(6, 4 // groups, k, k, dtype=F64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for flip_weight in (True, False):
        y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                            flip_weight=flip_weight)
        expect = _conv2d_resample_composed(x, w, f, up, down, padding, groups, flip_weight)
        assert y.shape == expect.shape
        assert torch.allclose(y, expect, rtol=1e-10, atol=1e-10)

@pytest.mark.parametrize('up,down', [(2, 1), (1, 2)])
def test_conv2d_resample_gradcheck_twice(up, down):
    x = torch.randn(1, 2, 4, 4, dtype=F64, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=F64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=1, groups=2,  # noqa: E731
                                                      flip_weight=(up == 1))
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)

#----------------------------------------------------------------------------
# conv2d_gradfix: drop-in equality, flag handling, R1-style double backward.

def test_conv2d_gradfix_dropin_and_flags():
    x = torch.randn(1, 4, 5, 5, dtype=F64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=F64, requires_grad=True)
    b = torch.randn(4, dtype=F64)
    assert torch.equal(conv2d_gradfix.conv2d(x, w, b, stride=2, padding=1, groups=2),
                       torch.nn.functional.conv2d(x, w, b, stride=2, padding=1, groups=2))
    wt = torch.randn(4, 3, 3, 3, dtype=F64)
    assert torch.equal(conv2d_gradfix.conv_transpose2d(x, wt, None, 2, 1, 1, 1),
                       torch.nn.functional.conv_transpose2d(x, wt, None, 2, 1, 1, 1))
    assert conv2d_gradfix.weight_gradients_disabled is False
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients(disable=False):
            assert conv2d_gradfix.weight_gradients_disabled is True
        (gx,) = torch.autograd.grad(conv2d_gradfix.conv2d(x, w, groups=2).square().sum(), [x], create_graph=True)
    assert conv2d_gradfix.weight_gradients_disabled is False
    gx.square().sum().backward()                                  # R1-style: second order reaches w
    assert w.grad is not None and w.grad.abs().sum() > 0
    fn = lambda x, w: conv2d_gradfix.conv_transpose2d(x, w, stride=2, padding=1)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (torch.randn(1, 2, 3, 3, dtype=F64, requires_grad=True),
                                             torch.randn(2, 2, 3, 3, dtype=F64, requires_grad=True)), fast_mode=True)

#----------------------------------------------------------------------------
# grid_sample_gradfix: reference sampler equals native, and both paths differentiate twice.

def test_grid_sample_ref_matches_native_and_double_backward(monkeypatch):
    x = torch.randn(2, 3, 5, 6, dtype=F64, requires_grad=True)
    grid = (torch.rand(2, 4, 7, 2, dtype=F64) * 2.6 - 1.3).requires_grad_(True)   # includes outside points
    native = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    assert torch.allclose(grid_sample_gradfix._grid_sample_ref(x, grid), native, atol=1e-12)
    assert torch.allclose(grid_sample_gradfix.grid_sample(x, grid), native, atol=1e-12)
    assert isinstance(grid_sample_gradfix.native_double_backward_ok('cpu'), bool)
    small_x = torch.randn(1, 1, 3, 3, dtype=F64, requires_grad=True)
    small_grid = torch.rand(1, 2, 2, 2, dtype=F64) * 1.6 - 0.8
    assert torch.autograd.gradgradcheck(lambda x: grid_sample_gradfix._grid_sample_ref(x, small_grid), (small_x,),
                                         fast_mode=True)
    second_order = []
    for native_ok in (True, False):                                 # both dispatch targets double-backward
        monkeypatch.setitem(grid_sample_gradfix._native_ok, 'cpu', native_ok)
        x.grad = None
        (gx,) = torch.autograd.grad(grid_sample_gradfix.grid_sample(x, grid).square().sum(), [x], create_graph=True)
        gx.square().sum().backward()
        second_order.append(x.grad.clone())
    torch.testing.assert_close(second_order[0], second_order[1])
    assert second_order[0].abs().sum() > 0

#----------------------------------------------------------------------------
# fma: value, broadcasting gradients, any order.

def test_fma_value_and_gradients():
    a = torch.randn(2, 3, 4, 1, dtype=F64, requires_grad=True)
    b = torch.randn(3, 1, 5, dtype=F64, requires_grad=True)
    c = torch.randn(1, 4, 5, dtype=F64, requires_grad=True)
    assert torch.allclose(fma.fma(a, b, c), fma._fma_ref(a, b, c))
    assert torch.autograd.gradcheck(fma.fma, (a, b, c), fast_mode=True)
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c), fast_mode=True)

#----------------------------------------------------------------------------
# Dispatch on CPU: impl='cuda' runs the reference and says so in the report.

def test_cpu_dispatch_uses_reference_and_reports():
    x = torch.randn(1, 2, 4, 4)
    f = upfirdn2d.setup_filter([1, 2, 1])
    assert torch.equal(upfirdn2d.upfirdn2d(x, f, up=2, impl='cuda'), upfirdn2d.upfirdn2d(x, f, up=2, impl='ref'))
    assert torch.equal(bias_act.bias_act(x, act='tanh', impl='cuda'), bias_act.bias_act(x, act='tanh', impl='ref'))
    report = custom_ops.impl_report()
    assert report['bias_act'] == 'ref: impl=ref requested' and report['upfirdn2d'] == 'ref: impl=ref requested'
    bias_act.bias_act(x)
    assert custom_ops.impl_report()['bias_act'] == 'ref: device=cpu'

#----------------------------------------------------------------------------

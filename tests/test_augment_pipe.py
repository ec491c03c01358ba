"""asa_plugin.augment_pipe.AugmentPipe (upstream's training.augment.AugmentPipe): upstream-compatible surface,
filters, each op in isolation, per-sample decision rates, gradients (first and second order, the R1 path) and 1-channel images."""

import ast
import inspect
import math
import os
import pickle

import numpy as np
import pytest
import torch

from asa_plugin import augment_pipe as augment
from asa_plugin.augment_pipe import AugmentPipe

OPS = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac',
       'brightness', 'contrast', 'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout']
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

def assert_near(a, b, atol=1e-6, rtol=0.0, msg=''):
    # Like torch.testing.assert_close, without its multi-second first-call import.
    err = (a - b).abs().max().item()
    assert a.shape == b.shape and err <= atol + rtol * b.abs().max().item(), f'{msg} max abs error {err:.3g}'

def make_pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe

def images(n=4, c=3, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, c, res, res], generator=g) * 2 - 1

#----------------------------------------------------------------------------
# Constructor, attributes and buffers match upstream's names, order and shapes.

def test_constructor_attributes_and_buffers():
    # The persistence decorator wraps __init__; read the signature of the class it decorates.
    init = next(c.__init__ for c in AugmentPipe.__mro__ if 'xflip' in inspect.signature(c.__init__).parameters)
    params = list(inspect.signature(init).parameters)[1:]
    assert params == ['xflip', 'rotate90', 'xint', 'xint_max', 'scale', 'rotate', 'aniso', 'xfrac',
                      'scale_std', 'rotate_max', 'aniso_std', 'xfrac_std', 'brightness', 'contrast',
                      'lumaflip', 'hue', 'saturation', 'brightness_std', 'contrast_std', 'hue_max',
                      'saturation_std', 'imgfilter', 'imgfilter_bands', 'imgfilter_std', 'noise',
                      'cutout', 'noise_std', 'cutout_size']
    pipe = AugmentPipe(xflip=1, cutout=1)
    for name in params:
        expected = list if name == 'imgfilter_bands' else float
        assert type(getattr(pipe, name)) is expected, name
    assert pipe.xflip == 1.0 and pipe.rotate90 == 0.0 and pipe.xint_max == 0.125 and pipe.cutout_size == 0.5
    assert [n for n, _ in pipe.named_buffers()] == ['p', 'Hz_geom', 'Hz_fbank']
    assert list(pipe.parameters()) == []
    assert pipe.p.shape == () and pipe.p.dtype == torch.float32 and pipe.p.item() == 1.0
    assert pipe.Hz_geom.shape == (12,) and pipe.Hz_fbank.shape == (4, 43)
    assert pipe.Hz_geom.dtype == pipe.Hz_fbank.dtype == torch.float32

#----------------------------------------------------------------------------
# sym6: orthonormal, 6 vanishing moments, least asymmetric orientation as tabulated.

def test_sym6_lowpass_definition():
    h = augment.symlet_lowpass(6)
    assert h.shape == (12,)
    assert h.sum() == pytest.approx(math.sqrt(2), abs=1e-12)
    for m in range(6):  # Orthonormal to its even shifts.
        assert np.dot(h[2 * m:], h[:h.size - 2 * m]) == pytest.approx(float(m == 0), abs=1e-12)
    k = np.arange(12)
    for j in range(6):  # High-pass (-1)^k h_k annihilates polynomials up to degree 5.
        assert np.sum((-1.0) ** k * k ** j * h) == pytest.approx(0, abs=1e-8 * 12 ** j)
    assert int(np.argmax(h)) == 5 and h[5] == pytest.approx(0.78764, abs=1e-5)  # published tables
    assert_near(AugmentPipe().Hz_geom, torch.tensor(h / h.sum(), dtype=torch.float32), atol=1e-7)

def test_sym2_is_db2_closed_form():
    r3 = math.sqrt(3)
    db2 = np.array([1 - r3, 3 - r3, 3 + r3, 1 + r3]) / (4 * math.sqrt(2))
    np.testing.assert_allclose(augment.symlet_lowpass(2)[::-1], db2, atol=1e-12)

#----------------------------------------------------------------------------
# The four bands split the unit impulse: they sum to it, only the lowest band passes DC,
# and their frequency responses sum to one everywhere.

def test_filter_bank():
    bank = AugmentPipe().Hz_fbank.double().numpy()
    delta = np.zeros(43); delta[21] = 1
    np.testing.assert_allclose(bank.sum(0), delta, atol=1e-6)
    np.testing.assert_allclose(bank.sum(1), [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-7)   # zero phase
    w = np.linspace(0, np.pi, 9)
    resp = np.real(np.exp(-1j * np.outer(w, np.arange(43) - 21)) @ bank.T)   # [freq, band]
    np.testing.assert_allclose(resp.sum(1), 1, atol=1e-6)
    assert resp[-1, 0] == pytest.approx(0, abs=1e-6) and resp[-1, 3] == pytest.approx(1, abs=1e-6)
    assert resp[0, 3] == pytest.approx(0, abs=1e-6)

#----------------------------------------------------------------------------
# p = 0: every op off. Color, filter, noise and cutout are exact; the geometric path is
# executed (as upstream does) and is the identity up to float rounding.

def test_p0_is_identity():
    x = images(n=2, res=16)
    for op in OPS:
        y = make_pipe(0.0, **{op: 1})(x)
        assert_near(y, x, atol=2e-5, rtol=0, msg=op)
    assert_near(make_pipe(0.0, **BGC, imgfilter=1, noise=1, cutout=1)(x), x, atol=2e-5, rtol=0)

#----------------------------------------------------------------------------
# Geometric ops with debug_percentile (deterministic) against their pixel definitions. Integer
# translation is exact. Mirroring ops (flip, 90-degree rotation) pass the image through sym6 and
# its mirror image, which do not cancel exactly because sym6 is only nearly symmetric (upstream
# behaves the same), so on smooth images they match the exact flip to within a few percent.

def smooth_images(n=4, c=3, res=16, seed=0):
    coarse = torch.rand([n, c, 4, 4], generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(res, res), mode='bicubic', align_corners=False)

def test_xint_is_an_exact_shift():
    x = images(res=16)
    y = make_pipe(xint=1)(x, debug_percentile=0.75)      # t = 0.0625 * 16 = 1 pixel in x and y
    assert_near(y[:, :, 2:-2, 2:-2], torch.roll(x, (1, 1), dims=(2, 3))[:, :, 2:-2, 2:-2], atol=2e-5, rtol=0)
    assert_near(make_pipe(xint=1)(x, debug_percentile=0.5), x, atol=2e-5, rtol=0)

def test_xflip_and_rotate90_match_exact_permutations():
    x = smooth_images()
    far = lambda a, b: (a - b).abs().max().item()
    assert far(make_pipe(xflip=1)(x, debug_percentile=0.9), x.flip(3)) < 0.05 < far(x, x.flip(3))
    assert_near(make_pipe(xflip=1)(x, debug_percentile=0.1), x, atol=2e-5, rtol=0)
    for pct, k in [(0.3, 1), (0.6, 2), (0.9, 3)]:
        y = make_pipe(rotate90=1)(x, debug_percentile=pct)
        assert far(y, torch.rot90(x, k, dims=[2, 3])) < 0.05 < far(x, torch.rot90(x, k, dims=[2, 3])), k
    assert_near(make_pipe(rotate90=1)(x, debug_percentile=0.1), x, atol=2e-5, rtol=0)

#----------------------------------------------------------------------------
# Color ops with debug_percentile: brightness adds, contrast scales, lumaflip reflects about
# the luma axis, hue and saturation keep luma; on 1 channel hue and saturation are skipped.

def test_color_ops_exact():
    x = images(res=8)
    pct = 0.8
    q = torch.erfinv(torch.tensor(pct * 2 - 1)).item()
    assert_near(make_pipe(brightness=1)(x, debug_percentile=pct), x + q * 0.2, atol=1e-6, rtol=0)
    assert_near(make_pipe(contrast=1)(x, debug_percentile=pct), x * 2 ** (q * 0.5), atol=1e-6, rtol=1e-6)
    luma = x.mean(1, keepdim=True)
    assert_near(make_pipe(lumaflip=1)(x, debug_percentile=0.9), x - 2 * luma, atol=1e-6, rtol=0)
    for op in ('hue', 'saturation'):
        y = make_pipe(**{op: 1})(x, debug_percentile=pct)
        assert_near(y.mean(1), luma[:, 0], atol=1e-6, rtol=0)
        assert (y - x).abs().max() > 0.05
    chroma = lambda t: (t - t.mean(1, keepdim=True)).square().sum(1)
    assert_near(chroma(make_pipe(hue=1)(x, debug_percentile=pct)), chroma(x), atol=1e-5, rtol=0)
    s = 2 ** q
    assert_near(chroma(make_pipe(saturation=1)(x, debug_percentile=pct)), chroma(x) * s * s, atol=1e-5, rtol=1e-5)

def test_one_channel():
    x = images(c=1, res=16)
    assert_near(make_pipe(lumaflip=1)(x, debug_percentile=0.9), -x, atol=1e-6, rtol=0)
    assert_near(make_pipe(hue=1, saturation=1)(x), x, atol=0)   # skipped for L images
    y = make_pipe(**BGC, imgfilter=1, noise=1, cutout=1)(images(c=1, res=24))
    assert y.shape == (4, 1, 24, 24) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match='channels'):
        make_pipe(brightness=1)(images(c=2))

#----------------------------------------------------------------------------
# Per-sample decision rates: the fraction of non-identity per-sample transforms is close to
# multiplier * p (x-flip: half of that; rotate90: 3/4; rotation: pre OR post = p).

@pytest.mark.parametrize('p', [0.3, 0.8])
def test_geometric_decision_rates(p):
    n, gen = 4000, torch.Generator().manual_seed(1)
    expected = dict(xflip=p / 2, rotate90=p * 3 / 4, xint=p, scale=p, rotate=p, aniso=p, xfrac=p)
    for op, rate in expected.items():
        G = make_pipe(p, **{op: 1})._sample_geometric([n, 3, 1000, 1000], torch.device('cpu'), None, gen)
        fired = (G - torch.eye(3)).abs().flatten(1).max(1).values > 1e-6
        assert fired.float().mean().item() == pytest.approx(rate, abs=0.035), op

@pytest.mark.parametrize('p', [0.3, 0.8])
def test_color_filter_noise_cutout_rates(p):
    n, gen = 3000, torch.Generator().manual_seed(2)
    x = torch.full([n, 3, 4, 4], 0.5)
    for op in ('brightness', 'contrast', 'saturation', 'hue'):
        x2 = torch.rand([n, 3, 4, 4], generator=gen)
        changed = (make_pipe(p, **{op: 1})(x2, generator=gen) - x2).abs().flatten(1).max(1).values > 1e-6
        assert changed.float().mean().item() == pytest.approx(p, abs=0.035), op
    y = make_pipe(p, lumaflip=1)(x, generator=gen)
    assert (y[:, 0, 0, 0] < 0).float().mean().item() == pytest.approx(p / 2, abs=0.035)
    y = make_pipe(p, noise=1)(x, generator=gen)
    assert ((y - x).abs().flatten(1).max(1).values > 0).float().mean().item() == pytest.approx(p, abs=0.035)
    # imgfilter: each of the 4 bands fires with p, so a sample is left alone with (1 - p)^4.
    x2 = torch.rand([1000, 1, 24, 24], generator=gen)
    changed = (make_pipe(p, imgfilter=1)(x2, generator=gen) - x2).abs().flatten(1).max(1).values > 1e-5
    assert changed.float().mean().item() == pytest.approx(1 - (1 - p) ** 4, abs=0.04)

#----------------------------------------------------------------------------
# Strength of the random ops at p = 1.

def test_op_strengths():
    n, gen = 4000, torch.Generator().manual_seed(3)
    x = torch.zeros([n, 3, 2, 2])
    shift = make_pipe(brightness=1)(x, generator=gen)[:, 0, 0, 0]
    assert shift.std().item() == pytest.approx(0.2, rel=0.05) and abs(shift.mean().item()) < 0.01
    ones = torch.ones([n, 3, 2, 2])
    log_c = make_pipe(contrast=1)(ones, generator=gen)[:, 0, 0, 0].log2()
    assert log_c.std().item() == pytest.approx(0.5, rel=0.05)
    noise = make_pipe(noise=1)(torch.zeros([n, 3, 4, 4]), generator=gen)
    assert noise.square().mean().item() == pytest.approx(0.1 ** 2, rel=0.08)   # E[sigma^2] = noise_std^2

def test_cutout_zero_fraction():
    # A 0.5 x 0.5 rectangle centred uniformly in [0,1]^2 covers 0.4375^2 of the image on average.
    n, p, gen = 4000, 0.5, torch.Generator().manual_seed(4)
    y = make_pipe(p, cutout=1)(torch.ones([n, 1, 16, 16]), generator=gen)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert (y == 0).float().mean().item() == pytest.approx(0.4375 ** 2 * p, abs=0.008)
    assert ((y == 0).flatten(1).any(1)).float().mean().item() == pytest.approx(p, abs=0.035)
    y = make_pipe(cutout=1)(torch.ones([2, 1, 16, 16]), debug_percentile=0.5)
    assert (y == 0).float().mean().item() == 0.25

#----------------------------------------------------------------------------
# Differentiable: for a fixed random stream the pipe is affine in the images, so the
# Jacobian-vector product must match a finite difference; and the R1 path (gradient of a
# gradient norm through the geometric ops) must reach D's parameters.

def test_gradients_first_order():
    pipe = make_pipe(0.9, **BGC, imgfilter=1, noise=1, cutout=1)
    x = images(n=2, res=16).requires_grad_(True)
    v = images(n=2, res=16, seed=9)
    run = lambda inp: pipe(inp, generator=torch.Generator().manual_seed(11))
    y = run(x)
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    eps = 1e-2
    with torch.no_grad():
        fd = ((run(x + eps * v) * w).sum() - (run(x - eps * v) * w).sum()) / (2 * eps)
    assert (g * v).sum().item() == pytest.approx(fd.item(), rel=2e-3, abs=1e-3)

def test_gradients_second_order_r1_path():
    pipe = make_pipe(1.0, **BGC)
    x = images(n=2, res=16).requires_grad_(True)
    weight = torch.randn([3, 16, 16], requires_grad=True)   # a linear "D"
    logits = (pipe(x, generator=torch.Generator().manual_seed(5)) * weight).flatten(1).sum(1)
    (grad_x,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    r1 = grad_x.square().sum()
    r1.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0

#----------------------------------------------------------------------------
# Random stream, debug determinism, small images, devices.

def test_generator_determinism():
    pipe = make_pipe(0.7, **BGC, imgfilter=1, noise=1, cutout=1)
    x = images(n=2, res=16)
    a = pipe(x, generator=torch.Generator().manual_seed(3))
    b = pipe(x, generator=torch.Generator().manual_seed(3))
    c = pipe(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    pipe = make_pipe(**BGC, imgfilter=1, cutout=1)
    assert torch.equal(pipe(x, debug_percentile=0.3), pipe(x, debug_percentile=0.3))

def test_imgfilter_on_images_smaller_than_the_filter():
    # Upstream's single reflect pad needs > 21 pixels; ours reflects repeatedly.
    x = images(res=8)
    assert_near(make_pipe(0.0, imgfilter=1)(x), x, atol=1e-5, rtol=0)
    assert make_pipe(1.0, imgfilter=1)(x).shape == x.shape

#----------------------------------------------------------------------------
# Embeddable in snapshots that upstream exec's: only allowed imports, pickles, keeps p.

def test_imports_are_upstream_safe():
    path = os.path.join(os.path.dirname(__file__), '..', 'asa_plugin', 'augment_pipe.py')
    tree = ast.parse(open(path, encoding='utf-8').read())
    allowed = {'numpy', 'scipy.signal', 'torch', 'torch_utils.misc', 'torch_utils.persistence',
               'torch_utils.ops.upfirdn2d', 'torch_utils.ops.grid_sample_gradfix', 'torch_utils.ops.conv2d_gradfix'}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f'{node.module}.{a.name}' if node.module == 'torch_utils' or node.module == 'torch_utils.ops'
                     else node.module for a in node.names]
        else:
            continue
        assert set(names) <= allowed, names

def test_pickle_round_trip_keeps_p():
    pipe = make_pipe(0.37, **BGC)
    clone = pickle.loads(pickle.dumps(pipe))
    assert clone.p.item() == pytest.approx(0.37) and clone.xflip == 1.0 and clone.cutout == 0.0
    x = images(res=16)
    assert_near(clone(x, generator=torch.Generator().manual_seed(1)), pipe(x, generator=torch.Generator().manual_seed(1)))

#----------------------------------------------------------------------------

"""ASA: the bound, the covariance tracker (every mode, per class, across ranks), the method's hooks,
its options, and the optional attention and reconstruction parts."""

import copy
import io
import os
import pickle
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import asa_plugin
from asa_plugin.asa import bound as B
from asa_plugin.asa.tracker import CovarianceTracker
from asa_plugin.asa.method import ASA
from asa_plugin.base import PluginContext

#----------------------------------------------------------------------------
# Helpers.

def _random_spd(C, gen, scale=1.0):
    a = torch.randn([C, C], generator=gen, dtype=torch.float64)
    return (a @ a.T / C + 0.1 * torch.eye(C, dtype=torch.float64)) * scale


def _stream(seed=0, C=5, sizes=(7, 1, 12, 3, 9, 16), offset=5.0):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn([C, C], generator=gen, dtype=torch.float64)
    return [torch.randn([n, C], generator=gen, dtype=torch.float64) @ mix + offset for n in sizes]


def _np_cov(x, weights=None):
    x = np.asarray(x, dtype=np.float64)
    mean = np.average(x, axis=0, weights=weights)
    cov = np.cov(x, rowvar=False, bias=True, aweights=weights).reshape(x.shape[1], x.shape[1])
    return mean, cov


def _make_D(c_dim=0, res=16, **kwargs):
    networks = pytest.importorskip('training.networks', reason='training/networks.py (networks engineer) is not there yet')
    torch.manual_seed(1)
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=256,
                                  channel_max=32, **kwargs)


def _ctx(D=None, c_dim=0, res=16, total_kimg=10):
    return PluginContext(device=torch.device('cpu'), c_dim=c_dim, img_resolution=res, img_channels=3,
                         batch_size=8, batch_gpu=8, total_kimg=total_kimg, D=D)

#----------------------------------------------------------------------------
# The bound: Jensen upper bound of E[softplus] under f~ ~ N(f, lam Sigma), and Sigma = 0 is the plain loss.

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_bound_above_monte_carlo(seed):
    gen = torch.Generator().manual_seed(seed)
    C, lam, S = 6, 0.7, 400_000
    w = torch.randn([C], generator=gen, dtype=torch.float64) * 0.7
    f = torch.randn([C], generator=gen, dtype=torch.float64)
    b = float(torch.randn([], generator=gen))
    sigma = _random_spd(C, gen)
    L = torch.linalg.cholesky(lam * sigma)
    f_aug = f + torch.randn([S, C], generator=gen, dtype=torch.float64) @ L.T
    l_aug = f_aug @ w + b
    l = (f @ w + b).reshape(1)
    q = B.quad_form(w[None], sigma)
    for target, u in (('real', -l_aug), ('fake', l_aug)):
        mc = F.softplus(u)
        mc_mean, se = float(mc.mean()), float(mc.std() / S ** 0.5)
        if target == 'real':
            bound = float(B.asa_d_loss(l, torch.full_like(l, -1e4), q, q * 0, lam))
            plain = float(F.softplus(-l))
        else:
            bound = float(B.asa_d_loss(torch.full_like(l, 1e4), l, q * 0, q, lam))
            plain = float(F.softplus(l))
        assert mc_mean <= bound + 4 * se, (target, mc_mean, bound)
        assert mc_mean >= plain - 4 * se, (target, mc_mean, plain)    # Jensen's other side: MC is sane.
        assert bound > plain                                           # The bound is not the plain loss.
    # G (non-saturating) bounds E[softplus(-l~)] of fakes.
    mc = F.softplus(-l_aug)
    assert float(mc.mean()) <= float(B.asa_g_loss(l, q, lam, 'ns')) + 4 * float(mc.std() / S ** 0.5)


def test_bound_equals_plain_loss_when_sigma_zero():
    gen = torch.Generator().manual_seed(3)
    N, C = 9, 4
    w = torch.randn([N, C], generator=gen)
    q = B.quad_form(w, torch.zeros([C, C]))
    assert torch.equal(q, torch.zeros([N]))
    l_real, l_fake = torch.randn([N], generator=gen), torch.randn([N], generator=gen)
    assert torch.allclose(B.asa_d_loss(l_real, l_fake, q, q, 0.9), F.softplus(-l_real) + F.softplus(l_fake))
    assert torch.allclose(B.asa_g_loss(l_fake, q, 0.9, 'ns'), F.softplus(-l_fake))
    assert torch.allclose(B.asa_g_loss(l_fake, q, 0.9, 'saturating'), -F.softplus(l_fake))
    logits = l_real[:, None]
    for target in ('real', 'fake'):
        assert torch.equal(B.adjusted_logits(logits, q, 0.9, target), logits)


def test_quad_form_shapes():
    gen = torch.Generator().manual_seed(4)
    N, C, K = 7, 5, 3
    w = torch.randn([N, C], generator=gen)
    sig = torch.stack([_random_spd(C, gen).float() for _ in range(K)])
    idx = torch.randint(0, K, [N], generator=gen)
    expect = torch.stack([w[i] @ sig[idx[i]] @ w[i] for i in range(N)])
    assert torch.allclose(B.quad_form(w, sig, idx), expect, rtol=1e-5)
    assert torch.allclose(B.quad_form(w, sig[idx]), expect, rtol=1e-5)
    assert torch.allclose(B.quad_form(w, sig[:1]), B.quad_form(w, sig[0]), rtol=1e-6)
    with pytest.raises(ValueError, match='sigma'):
        B.quad_form(w, sig)

#----------------------------------------------------------------------------
# Gradients of the composed pieces equal autograd of the loss written out directly.

def test_gradients_match_direct_formula():
    gen = torch.Generator().manual_seed(5)
    N, C, lam = 6, 4, 0.8
    sigma_r = _random_spd(C, gen)
    sigma_f = _random_spd(C, gen, 2.0)
    w0 = torch.randn([C], generator=gen, dtype=torch.float64)
    fr0 = torch.randn([N, C], generator=gen, dtype=torch.float64)
    ff0 = torch.randn([N, C], generator=gen, dtype=torch.float64)
    b = 0.3

    def grads(loss_fn):
        w, fr, ff = (t.clone().requires_grad_(True) for t in (w0, fr0, ff0))
        loss_fn(w, fr, ff).backward()
        return w.grad, fr.grad, ff.grad

    def composed_d(w, fr, ff):
        W = w.expand(N, C)
        lr, lf = fr @ w + b, ff @ w + b
        adj_r = B.adjusted_logits(lr[:, None], B.quad_form(W, sigma_r), lam, 'real')
        adj_f = B.adjusted_logits(lf[:, None], B.quad_form(W, sigma_f), lam, 'fake')
        via_hooks = (F.softplus(-adj_r) + F.softplus(adj_f)).sum()
        via_fn = B.asa_d_loss(lr, lf, B.quad_form(W, sigma_r), B.quad_form(W, sigma_f), lam).sum()
        assert torch.allclose(via_hooks, via_fn)
        return via_hooks

    def direct_d(w, fr, ff):
        total = 0
        for i in range(N):
            total = total + torch.log1p(torch.exp(-(fr[i] @ w + b) + lam / 2 * (w @ sigma_r @ w)))
            total = total + torch.log1p(torch.exp((ff[i] @ w + b) + lam / 2 * (w @ sigma_f @ w)))
        return total

    for a, d in zip(grads(composed_d), grads(direct_d)):
        assert torch.allclose(a, d, rtol=1e-10, atol=1e-12)

    # G: the non-saturating hook form and the saturating surrogate give the direct gradients w.r.t. features.
    def g_loss(form, via_hook):
        def fn(w, fr, ff):
            q = B.quad_form(w.detach().expand(N, C), sigma_f)
            lf = (ff @ w.detach() + b)[:, None]
            if not via_hook:
                return B.asa_g_loss(lf[:, 0], q, lam, form).sum()
            x = B.adjusted_logits(lf, q, lam, 'real') if form == 'ns' else B.saturating_surrogate(lf, q, lam)
            return F.softplus(-x).sum()
        return fn

    for form in ('ns', 'saturating'):
        hook_grad = grads(g_loss(form, True))[2]
        direct_grad = grads(g_loss(form, False))[2]
        assert torch.allclose(hook_grad, direct_grad, rtol=1e-10, atol=1e-12), form

#----------------------------------------------------------------------------
# The tracker against NumPy over a stream of batches. ema is defined as: every older sample's
# weight is multiplied by ema_decay per newer sample, and a new batch never gets less than
# ema_floor of the total weight. batch = covariance of the latest update.

def _ema_weights(sizes, decay, floor):
    weights = np.zeros([0])
    for n in sizes:
        total = weights.sum()
        omega = n / (decay ** n * total + n) if total > 0 else 1.0
        omega = max(omega, floor)
        if total > 0:
            weights = weights * (n * (1 - omega) / omega / total)
        weights = np.concatenate([weights, np.ones([n])])
    return weights


@pytest.mark.parametrize('mode,decay,floor', [('running', 0.999, 0.0), ('ema', 0.9, 0.0), ('ema', 0.95, 0.3),
                                              ('batch', 0.999, 0.0)])
def test_tracker_matches_numpy(mode, decay, floor):
    batches = _stream()
    tracker = CovarianceTracker(5, mode=mode, ema_decay=decay, ema_floor=floor)
    for i, x in enumerate(batches):
        tracker.update(x.float() if i % 2 else x)                       # float32 input is accepted too
        seen = [b.numpy() if j % 2 == 0 else b.float().double().numpy() for j, b in enumerate(batches[:i + 1])]
        if mode == 'running':
            mean, cov = _np_cov(np.concatenate(seen))
        elif mode == 'batch':
            mean, cov = _np_cov(seen[-1])
        else:
            mean, cov = _np_cov(np.concatenate(seen), _ema_weights([len(s) for s in seen], decay, floor))
        np.testing.assert_allclose(tracker.mean[0].numpy(), mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(tracker.cov[0].numpy(), cov, rtol=1e-9, atol=1e-9)
    assert tracker.num_updates == len(batches)


@pytest.mark.parametrize('mode', ['running', 'ema', 'batch'])
def test_tracker_per_class(mode):
    K, C = 3, 4
    gen = torch.Generator().manual_seed(6)
    tracker = CovarianceTracker(C, num_classes=K, mode=mode, ema_decay=0.97)
    xs, labels = [], []
    for n in (10, 6, 13, 8):
        x = torch.randn([n, C], generator=gen, dtype=torch.float64) * 2 + 1
        y = torch.randint(0, K - 1, [n], generator=gen)                 # Class K-1 never appears.
        tracker.update(x, y)
        xs.append(x.numpy())
        labels.append(y.numpy())
    for k in range(K):
        per_batch = [x[y == k] for x, y in zip(xs, labels)]
        per_batch = [x for x in per_batch if len(x)]
        if not per_batch:
            assert float(tracker.count[k]) == 0 and float(tracker.cov[k].abs().sum()) == 0
            continue
        if mode == 'running':
            mean, cov = _np_cov(np.concatenate(per_batch))
        elif mode == 'batch':
            mean, cov = _np_cov(per_batch[-1])
        else:
            mean, cov = _np_cov(np.concatenate(per_batch), _ema_weights([len(x) for x in per_batch], 0.97, 0.0))
        np.testing.assert_allclose(tracker.mean[k].numpy(), mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(tracker.cov[k].numpy(), cov, rtol=1e-9, atol=1e-9)


def test_tracker_skips_nonfinite_rows():
    x = _stream(sizes=(8,))[0].clone()
    x[1, 2] = float('nan')
    x[5, 0] = float('inf')
    tracker = CovarianceTracker(5)
    tracker.update(x)
    keep = np.ones(8, bool)
    keep[[1, 5]] = False
    mean, cov = _np_cov(x.numpy()[keep])
    assert int(tracker.skipped) == 2
    assert torch.isfinite(tracker.cov).all()
    np.testing.assert_allclose(tracker.cov[0].numpy(), cov, rtol=1e-9, atol=1e-9)
    tracker.update(torch.full([3, 5], float('nan')))                    # An all-bad batch changes nothing.
    assert int(tracker.skipped) == 5
    np.testing.assert_allclose(tracker.mean[0].numpy(), mean, rtol=1e-9, atol=1e-9)


def test_tracker_state_round_trip():
    batches = _stream(seed=7)
    a = CovarianceTracker(5, num_classes=2, mode='ema', ema_decay=0.9, ema_floor=0.1)
    labels = [torch.arange(len(x)) % 2 for x in batches]
    for x, y in zip(batches[:3], labels[:3]):
        a.update(x, y)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = CovarianceTracker(5, num_classes=2)
    b.load_state_dict(torch.load(buf, weights_only=True))              # Plain data only.
    for x, y in zip(batches[3:], labels[3:]):
        a.update(x, y)
        b.update(x, y)
    for name in ('count', 'mean', 'cov'):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(ValueError, match='num_classes'):
        CovarianceTracker(5, num_classes=3).load_state_dict(a.state_dict())


def test_tracker_bad_options():
    with pytest.raises(ValueError, match='unknown mode "fast"'):
        CovarianceTracker(4, mode='fast')
    with pytest.raises(ValueError, match='ema_floor'):
        CovarianceTracker(4, mode='ema', ema_floor=2)
    with pytest.raises(ValueError, match=r'features must be \[N, 4\]'):
        CovarianceTracker(4).update(torch.zeros([3, 5]))

#----------------------------------------------------------------------------
# Two gloo ranks with different batches hold the same Sigma, equal to the pooled covariance.

def _gloo_worker(rank, init_file, out_dir, batches):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        tracker = CovarianceTracker(5, num_classes=2, mode='running')
        for step_batches in batches:
            x, y = step_batches[rank]
            tracker.update(x, y)
        torch.save(tracker.state_dict(), os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        torch.distributed.destroy_process_group()


def test_tracker_two_rank_gloo():
    gen = torch.Generator().manual_seed(8)
    batches = []
    for n0, n1 in ((6, 9), (4, 4), (11, 2)):
        batches.append([(torch.randn([n], generator=gen, dtype=torch.float64).unsqueeze(1).repeat(1, 5)
                         + torch.randn([n, 5], generator=gen, dtype=torch.float64) + 3,
                         torch.randint(0, 2, [n], generator=gen)) for n in (n0, n1)])
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_gloo_worker, args=(os.path.join(tmp, 'store'), tmp, batches), nprocs=2, join=True)
        s0 = torch.load(os.path.join(tmp, 'rank0.pt'), weights_only=True)
        s1 = torch.load(os.path.join(tmp, 'rank1.pt'), weights_only=True)
    assert torch.equal(s0['cov'], s1['cov']) and torch.equal(s0['mean'], s1['mean'])
    xs = torch.cat([x for step in batches for x, _ in step]).numpy()
    ys = torch.cat([y for step in batches for _, y in step]).numpy()
    for k in range(2):
        mean, cov = _np_cov(xs[ys == k])
        np.testing.assert_allclose(s0['cov'][k].numpy(), cov, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s0['mean'][k].numpy(), mean, rtol=1e-9, atol=1e-9)

#----------------------------------------------------------------------------
# D.last_layer(c) is the out layer projected onto cmap(c) (networks engineer's D).

@pytest.mark.parametrize('c_dim', [0, 3])
def test_last_layer_is_projection_of_out_layer(c_dim):
    D = _make_D(c_dim)
    N = 8
    c = torch.eye(max(c_dim, 1))[torch.arange(N) % max(c_dim, 1)][:, :c_dim]
    img = torch.randn([N, 3, 16, 16])
    w, b = D.last_layer(c)
    out = D.b4.out
    W = out.weight * out.weight_gain                                    # [O,C] equalized lr
    bias = out.bias * out.bias_gain
    if c_dim:
        cmap = D.mapping(None, c) / np.sqrt(D.b4.cmap_dim)
        w_ref, b_ref = cmap @ W, cmap @ bias
    else:
        w_ref, b_ref = W.expand(N, -1), bias.expand(N)
    assert torch.allclose(w, w_ref, atol=1e-6) and torch.allclose(b, b_ref, atol=1e-6)
    logits, f = D(img, c, return_features=True)
    assert torch.allclose(logits[:, 0], (f * w).sum(1) + b, atol=1e-5)
    assert torch.equal(logits, D(img, c))

#----------------------------------------------------------------------------
# The method's hooks with a real D: margins, phases, ramp, stats, state, R1 invariance.

def _feed(method, D, c, N=8, seed=9):
    gen = torch.Generator().manual_seed(seed)
    real, fake = torch.randn([N, 3, 16, 16], generator=gen), torch.randn([N, 3, 16, 16], generator=gen) * 0.5
    with torch.no_grad():
        _, fr = D(real, c, return_features=True)
        _, ff = D(fake, c, return_features=True)
    method.observe_features(fr, c, 'real')
    method.observe_features(ff, c, 'fake')
    return real, fake


@pytest.mark.parametrize('c_dim,per_class', [(0, False), (3, False), (3, True)])
def test_method_adjusts_logits(c_dim, per_class):
    D = _make_D(c_dim)
    N = 8
    c = torch.eye(max(c_dim, 1))[torch.arange(N) % max(c_dim, 1)][:, :c_dim]
    asa = ASA(lambda0=0.6, ramp='none', form='jensen', cov_mode='running', per_class=per_class)
    asa.setup(_ctx(D, c_dim))
    real, fake = _feed(asa, D, c)
    logits, _ = D(real, c, return_features=True)
    w = D.last_layer(c)[0].detach()
    tr, tf = asa.trackers['real'], asa.trackers['fake']
    idx = c.argmax(1) if per_class else torch.zeros(N, dtype=torch.long)
    q_r = torch.stack([w[i].double() @ tr.cov[idx[i]] @ w[i].double() for i in range(N)]).float()
    q_f = torch.stack([w[i].double() @ tf.cov[idx[i]] @ w[i].double() for i in range(N)]).float()
    assert (q_r > 0).all() and not torch.allclose(q_r, q_f)
    assert torch.allclose(asa.adjust_logits(logits, None, c, 'real', 'Dmain'), logits - 0.3 * q_r[:, None], rtol=1e-4, atol=1e-5)
    assert torch.allclose(asa.adjust_logits(logits, None, c, 'fake', 'Dmain'), logits + 0.3 * q_f[:, None], rtol=1e-4, atol=1e-5)
    assert torch.allclose(asa.adjust_logits(logits, None, c, 'real', 'Gmain'), logits - 0.3 * q_f[:, None], rtol=1e-4, atol=1e-5)
    stats = asa.stats()
    assert stats['ASA/lambda'] == pytest.approx(0.6)
    assert stats['ASA/q_real'] == pytest.approx(float(q_r.mean()), rel=1e-4)
    assert stats['ASA/q_fake'] == pytest.approx(float(q_f.mean()), rel=1e-4)
    seen = tr.count > 0
    assert stats['ASA/trace_real'] == pytest.approx(float(tr.trace()[seen].mean()))
    assert stats['ASA/skipped_real'] == 0


def test_method_ramp_and_r1_invariance():
    D = _make_D()
    c = torch.zeros([8, 0])
    asa = ASA(lambda0=0.5, ramp='10kimg', form='jensen')
    asa.setup(_ctx(D, total_kimg=10))
    real, _ = _feed(asa, D, c)
    logits = D(real, c)
    assert asa.adjust_logits(logits, None, c, 'real', 'Dmain') is logits          # lambda = 0 at the start
    asa.update(cur_nimg=5000, batch_size=8)
    assert asa.lam == pytest.approx(0.25)
    asa.update(cur_nimg=50_000, batch_size=8)
    assert asa.lam == pytest.approx(0.5)
    asa2 = ASA(lambda0=2, ramp='2kimg')
    asa2.setup(_ctx(D, total_kimg=10))
    asa2.update(cur_nimg=1000, batch_size=8)
    assert asa2.lam == pytest.approx(1.0)
    # R1: the margin does not depend on the image, so the gradient w.r.t. the image is unchanged.
    img = real.clone().requires_grad_(True)
    raw = D(img, c)
    g_raw, = torch.autograd.grad(raw.sum(), img, retain_graph=True)
    g_adj, = torch.autograd.grad(asa.adjust_logits(raw, None, c, 'real', 'Dmain').sum(), img)
    assert torch.allclose(g_raw, g_adj, atol=1e-6)
    # The margin's gradient reaches D's out layer (the quadratic term penalises w along high variance).
    D.zero_grad(set_to_none=True)
    (asa.adjust_logits(raw.detach(), None, c, 'real', 'Dmain')).sum().backward()
    assert D.b4.out.weight.grad is not None and D.b4.out.weight.grad.abs().sum() > 0


def test_method_state_round_trip_and_pickle():
    D = _make_D(3)
    c = torch.eye(3)[torch.arange(8) % 3]
    asa = ASA(lambda0=0.4, ramp='none', per_class=True, cov_mode='ema')
    asa.setup(_ctx(D, 3))
    _feed(asa, D, c)
    asa.update(cur_nimg=1234, batch_size=8)
    buf = io.BytesIO()
    torch.save(asa.plugin_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = ASA(lambda0=0.4, ramp='none', per_class=True, cov_mode='ema')
    with pytest.raises(RuntimeError, match='before setup'):
        fresh.load_plugin_state(state)                                  # Built with its context first.
    fresh.setup(_ctx(D, 3))
    fresh.load_plugin_state(state)
    assert fresh.cur_nimg == 1234 and fresh.lam == asa.lam
    for kind in ('real', 'fake'):
        assert torch.equal(fresh.trackers[kind].cov, asa.trackers[kind].cov)
    logits = torch.randn([8, 1])
    assert torch.equal(fresh.adjust_logits(logits, None, c, 'fake', 'Dmain'), asa.adjust_logits(logits, None, c, 'fake', 'Dmain'))
    clone = pickle.loads(pickle.dumps(asa))
    assert torch.equal(clone.trackers['real'].cov, asa.trackers['real'].cov)


def test_method_reports_nonfinite_features():
    asa = ASA(ramp='none')
    asa.setup(_ctx())
    f = torch.randn([6, 8])
    f[2] = float('nan')
    asa.observe_features(f, torch.zeros([6, 0]), 'real')
    stats = asa.stats()
    assert stats['ASA/skipped_real'] == 1 and np.isfinite(stats['ASA/trace_real'])


def test_method_option_errors():
    with pytest.raises(ValueError, match='lambda0 must be >= 0'):
        ASA(lambda0=-0.1)
    with pytest.raises(ValueError, match='unknown cov_mode "exact"'):
        ASA(cov_mode='exact')
    with pytest.raises(ValueError, match='unknown g_loss'):
        ASA(g_loss='hinge')
    with pytest.raises(ValueError, match='ramp'):
        ASA(ramp='fast')
    with pytest.raises(ValueError, match='ramp=linear .* was removed'):
        ASA(ramp='linear')
    with pytest.raises(ValueError, match='unknown form'):
        ASA(form='exact')
    with pytest.raises(ValueError, match='per_class'):
        asa_plugin.create_augment_stack('asa:per_class=maybe')
    with pytest.raises(ValueError, match='per_class=true needs a conditional dataset'):
        ASA(per_class=True).setup(_ctx(c_dim=0))
    with pytest.raises(ValueError, match='recon_res must be a power of two'):
        ASA(recon_res=12)
    with pytest.raises(ValueError, match='attention_res must be an integer'):
        ASA(attention_res='big')
    asa = asa_plugin.create_augment_stack('asa:lambda0=0.25,per_class=false,ramp=500kimg').get('asa')
    assert (asa.lambda0, asa.per_class, asa.ramp) == (0.25, False, 500.0)


def test_spec_builds_asa():
    stack_mod = pytest.importorskip('asa_plugin.stack')
    import asa_plugin  # noqa: F401  (registers every method)
    stack = stack_mod.create_augment_stack('asa:lambda0=0.3,cov_mode=batch,g_loss=saturating')
    asa = stack.get('asa')
    assert asa.lambda0 == 0.3 and asa.cov_mode == 'batch' and asa.g_loss == 'saturating'
    assert stack.needs_features

def test_controllers_see_raw_logits_through_the_loss():
    loss_mod = pytest.importorskip('training.loss', reason='training/loss.py (training area) is not there yet')
    networks = pytest.importorskip('training.networks')
    import asa_plugin
    torch.manual_seed(2)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    D = _make_D()
    stack = asa_plugin.create_augment_stack('ada+asa:ramp=none,cov_mode=batch', _ctx(D))
    seen, raw = [], []
    stack.get('ada').observe_real_logits = lambda logits: seen.append(logits.clone())
    D.register_forward_hook(lambda module, args, output: raw.append(output[0].detach().clone()))
    loss = loss_mod.StyleGAN2Loss('cpu', G, D, augment=stack, r1_gamma=0, pl_weight=0)
    real, c = torch.randn([8, 3, 16, 16]), torch.zeros([8, 0])
    for _ in range(2):                                                  # The 2nd pass has a Sigma.
        D.requires_grad_(True)
        loss.accumulate_gradients('Dmain', real, c, torch.randn([8, 16]), c, gain=1)
    assert len(seen) == 2 and len(raw) == 4                             # fake, real per round
    assert torch.equal(seen[1], raw[3])                                 # the raw real logits, no margin
    assert stack.get('asa').stats()['ASA/q_real'] > 0                   # while the margin was applied


#----------------------------------------------------------------------------
# Attention and reconstruction: off by default, D's names and pickles untouched.

def _hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_attention_is_passed_per_call_and_never_stored_in_D():
    D = _make_D()
    names = [n for n, _ in D.named_parameters()]
    img, c = torch.randn([4, 3, 16, 16]), torch.zeros([4, 0])
    before = D(img, c)
    asa = ASA(attention=True)
    asa.setup(_ctx(D))
    assert asa.attention_res == 8 and len(asa.extra_parameters('D')) == 6 and asa.extra_parameters('G') == []
    attend = asa.attend_maps()
    assert list(attend) == [8] and attend[8] is asa.cbam
    assert not torch.allclose(D(img, c, attend=attend), before)         # CBAM acts when passed...
    assert torch.allclose(D(img, c), before, atol=1e-6)                 # ...and only then;
    assert [n for n, _ in D.named_parameters()] == names                # no new D parameters,
    assert _hook_count(D) == 0                                          # nothing installed in D,
    assert b'asa_plugin' not in pickle.dumps(D)                         # and pickles are the plain D.
    state = asa.plugin_state()
    assert set(state['cbam']) == {n for n, _ in asa.cbam.named_parameters()}
    with pytest.raises(ValueError, match='attention_res=64: resolution 64 has no discriminator block'):
        ASA(attention=True, attention_res=64).setup(_ctx(D))


def test_loss_applies_attention_in_every_D_call():
    # The loss's run_D is the one door: with attention on, its logits differ from the plain D's,
    # gradients reach CBAM, and D holds no hook afterwards.
    from training.loss import StyleGAN2Loss
    D = _make_D()
    stack = asa_plugin.create_augment_stack('asa:attention=true', _ctx(D))
    loss = StyleGAN2Loss(torch.device('cpu'), G=None, D=D, augment=stack)
    img, c = torch.randn([4, 3, 16, 16]), torch.zeros([4, 0])
    logits, features = loss.run_D(img, c)
    assert features is not None and not torch.allclose(logits, D(img, c))
    logits.sum().backward()
    assert all(p.grad is not None for p in stack.extra_parameters('D'))
    assert _hook_count(D) == 0
    plain = StyleGAN2Loss(torch.device('cpu'), G=None, D=D, augment=asa_plugin.create_augment_stack('asa', _ctx(D)))
    assert torch.allclose(plain.run_D(img, c)[0], D(img, c), atol=1e-6)


def test_fp16_D_with_attention():
    D = _make_D(num_fp16_res=2, conv_clamp=256)                         # b16, b8 run in fp16
    img, c = torch.randn([8, 3, 16, 16]), torch.zeros([8, 0])
    asa = ASA(ramp='none', attention=True)
    asa.setup(_ctx(D))
    logits, f = D(img, c, return_features=True, attend=asa.attend_maps())
    assert f.dtype == torch.float32 and logits.dtype == torch.float32
    asa.observe_features(f.detach(), c, 'real')
    adjusted = asa.adjust_logits(logits, f, c, 'real', 'Dmain')
    assert adjusted.dtype == torch.float32 and torch.isfinite(adjusted).all()
    adjusted.sum().backward()
    assert all(p.grad is not None for p in asa.extra_parameters('D'))


def test_reconstruction_term():
    D = _make_D()
    asa = ASA(recon=1.0)
    asa.setup(_ctx(D))
    real, c = torch.randn([4, 3, 16, 16]), torch.zeros([4, 0])
    calls = []
    def run_D(img, c, augment=True):
        calls.append(augment)
        return D(img, c, return_features=True)
    assert asa.extra_loss('Gmain', run_D, real, c, None, None) is None
    loss = asa.extra_loss('Dmain', run_D, real, c, None, None)
    assert calls == [False] and loss.ndim == 0 and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in asa.extra_parameters('D'))
    assert D.b4.fc.weight.grad is not None                               # Self-supervision reaches D.
    assert ASA().extra_loss('Dmain', run_D, real, c, None, None) is None  # Off by default.

#----------------------------------------------------------------------------
# On a GPU: the tracker matches the CPU one and the per-step hooks never wait for the device.

@pytest.mark.cuda
@pytest.mark.parametrize('per_class', [False, True])
def test_cuda_hooks_match_cpu_without_host_sync(per_class):
    device = torch.device('cuda')
    gen = torch.Generator().manual_seed(10)
    N, C, K = 16, 32, 4
    f = torch.randn([N, C], generator=gen) + 2
    c = torch.eye(K)[torch.arange(N) % K]
    w = torch.randn([N, C], generator=gen)

    class _Last(torch.nn.Module):   # Stand-in D with only the last-layer API, w already on the device.
        def __init__(self, dev):
            super().__init__()
            self.w = w.to(dev)
        def last_layer(self, c):
            return self.w, torch.zeros([c.shape[0]], device=c.device)

    methods = {}
    for dev in (torch.device('cpu'), device):
        asa = ASA(ramp='none', cov_mode='ema', per_class=per_class)
        asa.setup(PluginContext(device=dev, c_dim=K, D=_Last(dev)))
        methods[dev.type] = asa
    logits = torch.randn([N, 1], generator=gen)
    out = {}
    for name, asa in methods.items():
        dev = torch.device(name)
        fd, cd, ld = f.to(dev), c.to(dev), logits.to(dev)
        asa.observe_features(fd, cd, 'real')                            # First update allocates on the device.
        if name == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode('error')
        try:
            asa.observe_features(fd * 1.5, cd, 'real')
            out[name] = asa.adjust_logits(ld, fd, cd, 'real', 'Dmain')
        finally:
            if name == 'cuda':
                torch.cuda.set_sync_debug_mode(0)
    assert torch.allclose(out['cuda'].cpu(), out['cpu'], rtol=1e-5, atol=1e-5)
    assert torch.allclose(methods['cuda'].trackers['real'].cov.cpu(), methods['cpu'].trackers['real'].cov, rtol=1e-10, atol=1e-12)

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# Strength in kimg, not a fraction of --kimg (a 1000-kimg and a 25000-kimg run agree at 500 kimg).

@pytest.mark.parametrize('ramp', ['none', '300', '2000kimg'])
def test_lambda_does_not_depend_on_run_length(ramp):
    lams = []
    for total_kimg in (1000, 25000):
        asa = ASA(lambda0=0.8, ramp=ramp)
        asa.setup(_ctx(total_kimg=total_kimg))
        asa.update(cur_nimg=500_000, batch_size=32)
        lams.append(asa.lam)
    expect = {'none': 0.8, '300': 0.8, '2000kimg': 0.8 * 500 / 2000}[ramp]
    assert lams[0] == lams[1] == pytest.approx(expect)

#----------------------------------------------------------------------------
# The expected form: the plain loss of the effective logit is E[softplus] under the Gaussian logit
# (Monte Carlo), below the Jensen bound, and its gradient grows like sqrt(q), not q.

@pytest.mark.parametrize('target', ['real', 'fake'])
def test_expected_form_matches_monte_carlo(target):
    gen = torch.Generator().manual_seed(7)
    l = torch.randn([6, 1], generator=gen, dtype=torch.float64) * 3
    q = torch.rand([6], generator=gen, dtype=torch.float64) * 5
    lam, S = 0.8, 400_000
    sign = -1.0 if target == 'real' else 1.0
    u = sign * (l + (lam * q[:, None]).sqrt() * torch.randn([1, S], generator=gen, dtype=torch.float64))
    mc = F.softplus(u)
    loss = F.softplus(sign * B.adjusted_logits(l, q, lam, target, 'expected'))[:, 0]
    assert torch.allclose(loss, mc.mean(1), atol=float(4 * mc.std(1).max() / S ** 0.5))
    jensen = F.softplus(sign * B.adjusted_logits(l, q, lam, target, 'jensen'))[:, 0]
    assert (loss <= jensen + 1e-9).all() and (loss >= F.softplus(sign * l[:, 0]) - 1e-9).all()


def test_expected_form_stays_linear_in_the_augmentation_std():
    l = torch.zeros([3, 1], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([1e2, 1e4, 1e6], dtype=torch.float64, requires_grad=True)
    loss = F.softplus(-B.adjusted_logits(l, q, 1.0, 'real', 'expected'))[:, 0]
    # E[softplus(s eps)] -> s / sqrt(2 pi) for large s; Jensen would give q / 2.
    assert torch.allclose(loss, q.detach().sqrt() / (2 * np.pi) ** 0.5, rtol=0.05)
    loss.sum().backward()
    assert torch.allclose(l.grad[:, 0], torch.full([3], -0.5, dtype=torch.float64), atol=1e-3)
    assert (q.grad > 0).all() and (q.grad <= 1 / 8 + 1e-9).all()                   # dE/dq = lam/2 E[sigmoid'] <= lam/8
    # Far from the decision boundary both forms cost nothing, and gradients stay finite.
    far = torch.tensor([[-800.0], [800.0]], dtype=torch.float64, requires_grad=True)
    x = B.adjusted_logits(far, torch.tensor([1.0, 1.0], dtype=torch.float64), 1.0, 'real', 'expected')
    F.softplus(-x).sum().backward()
    assert torch.isfinite(far.grad).all() and float(far.grad[0]) == pytest.approx(-1.0)


@pytest.mark.parametrize('form', ['jensen', 'expected', 'moderated'])
def test_saturating_surrogate_gradient(form):
    gen = torch.Generator().manual_seed(8)
    l = (torch.randn([7, 1], generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    q = torch.rand([7], generator=gen, dtype=torch.float64) * 4
    lam = 0.7
    x = B.saturating_surrogate(l, q, lam, form)
    (g_sur,) = torch.autograd.grad(F.softplus(-x).sum(), l)
    l2 = l.detach().requires_grad_(True)
    direct = -F.softplus(B.adjusted_logits(l2, q, lam, 'fake', form))                # -E[softplus(l~)]
    (g_dir,) = torch.autograd.grad(direct.sum(), l2)
    assert torch.allclose(g_sur, g_dir, rtol=1e-6, atol=1e-9)
    assert torch.allclose(x.detach(), B.adjusted_logits(l.detach(), q, lam, 'real', form))

#----------------------------------------------------------------------------
# cov_mode=batch: the G step's fake covariance comes from the G batch itself, not the last D step.

def test_batch_mode_G_step_uses_the_current_G_batch():
    D = _make_D()
    N = 8
    c = torch.zeros([N, 0])
    asa = ASA(lambda0=1.0, form='jensen', cov_mode='batch')
    asa.setup(_ctx(D))
    _feed(asa, D, c)
    gen_img = torch.randn([N, 3, 16, 16]) * 3
    with torch.no_grad():
        logits, features = D(gen_img, c, return_features=True)
    w = D.last_layer(c)[0].detach().double()
    x = features.double() - features.double().mean(0)
    q_batch = float(w[0] @ (x.T @ x / N) @ w[0])
    stale = float(w[0] @ asa.trackers['fake'].cov[0] @ w[0])
    assert abs(q_batch - stale) > 1e-3 * q_batch
    adjusted = asa.adjust_logits(logits, features, c, 'real', 'Gmain')
    assert torch.allclose(adjusted, logits - 0.5 * q_batch, rtol=1e-4, atol=1e-5)
    # The EMA mode keeps using the tracked covariance in the G step.
    ema = ASA(lambda0=1.0, form='jensen', cov_mode='ema')
    ema.setup(_ctx(D))
    _feed(ema, D, c)
    q_ema = float(w[0] @ ema.trackers['fake'].cov[0] @ w[0])
    assert torch.allclose(ema.adjust_logits(logits, features, c, 'real', 'Gmain'), logits - 0.5 * q_ema, rtol=1e-4, atol=1e-5)

#----------------------------------------------------------------------------
# The official recipe as a preset, expanded in the spec; options next to it override it.

def test_official_preset():
    from asa_plugin import SpecError, canonical_spec, create_augment_stack
    assert canonical_spec('asa:preset=official') == \
        'diffaug:color,translation,cutout+asa:lambda0=1.0,ramp=none,form=jensen,cov_mode=batch,g_loss=saturating'
    stack = create_augment_stack('asa:preset=official,lambda0=0.5')
    asa = stack.get('asa')
    assert (asa.lambda0, asa.cov_mode, asa.g_loss, asa.ramp, asa.form) == (0.5, 'batch', 'saturating', 'none', 'jensen')
    assert stack.get('diffaug') is not None
    with pytest.raises(SpecError, match='no preset "paper"; presets: official'):
        canonical_spec('asa:preset=paper')

#----------------------------------------------------------------------------
# Stats: q and the margin (mean and maximum since the last tick) for both kinds.

def test_stats_report_q_and_margin():
    D = _make_D()
    c = torch.zeros([8, 0])
    asa = ASA(lambda0=0.6, form='jensen', cov_mode='running')
    asa.setup(_ctx(D))
    real, fake = _feed(asa, D, c)
    logits = D(real, c).detach()
    adjusted = asa.adjust_logits(logits, None, c, 'real', 'Dmain')
    q = B.quad_form(D.last_layer(c)[0].detach(), asa.trackers['real'].covariance32())
    stats = asa.stats()
    assert stats['ASA/q_real'] == pytest.approx(float(q.mean()), rel=1e-5)
    assert stats['ASA/q_max'] == pytest.approx(float(q.max()), rel=1e-5)
    assert stats['ASA/margin_real'] == pytest.approx(float((logits - adjusted.detach()).abs().mean()), rel=1e-5)
    assert stats['ASA/margin_real'] == pytest.approx(0.3 * float(q.mean()), rel=1e-4)
    assert 'ASA/q_fake' not in stats                                   # No fake pass since the last tick.
    assert not any(k.startswith(('ASA/q_', 'ASA/margin_')) for k in asa.stats())   # Reset per tick.

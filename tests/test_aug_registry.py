"""Contract tests for every registered augmentation method, plus the spec grammar, the
combination rules, the stack, and method-specific facts (DiffAugment ranges, APA mixing, DAG heads)."""

import io
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import asa_plugin
from asa_plugin import PluginContext, SpecError, create_augment, create_augment_stack, list_augments, parse_spec
from asa_plugin import canonical_spec
from asa_plugin.base import AugmentMethod
from asa_plugin.diffaug import rand_brightness, rand_contrast, rand_cutout, rand_saturation, rand_translation

RES, N = 16, 8

#----------------------------------------------------------------------------
# A tiny discriminator with the feature API of docs/design.md (b4.fc, b4.out, mapping,
# return_features, last_layer); written for these tests, not the real network.

class _Mapping(torch.nn.Module):
    def __init__(self, c_dim, cmap_dim):
        super().__init__()
        self.embed = torch.nn.Linear(c_dim, cmap_dim)

    def forward(self, z, c):
        return self.embed(c)


class TinyD(torch.nn.Module):
    def __init__(self, c_dim=0, img_channels=3, C=8, cmap_dim=6):
        super().__init__()
        self.c_dim = c_dim
        self.conv = torch.nn.Conv2d(img_channels, C, 4, stride=4)
        self.b4 = torch.nn.Module()
        self.b4.fc = torch.nn.Linear(C * (RES // 4) ** 2, C)
        self.b4.out = torch.nn.Linear(C, cmap_dim if c_dim else 1)
        if c_dim:
            self.mapping = _Mapping(c_dim, cmap_dim)

    def forward(self, img, c, return_features=False):
        f = F.leaky_relu(self.b4.fc(self.conv(img).flatten(1)), 0.2)
        x = self.b4.out(f)
        if self.c_dim:
            x = (x * self.mapping(None, c)).sum(1, keepdim=True) / math.sqrt(x.shape[1])
        return (x, f) if return_features else x

    def last_layer(self, c):
        w, b = self.b4.out.weight, self.b4.out.bias
        if not self.c_dim:
            return w[0].expand(c.shape[0], -1), b[0].expand(c.shape[0])
        cmap = self.mapping(None, c) / math.sqrt(w.shape[0])
        return cmap @ w, cmap @ b


def make_ctx(c_dim=0, **kwargs):
    torch.manual_seed(1234)
    return PluginContext(device=torch.device('cpu'), c_dim=c_dim, img_resolution=RES, img_channels=3,
                         batch_size=N, batch_gpu=N, D=TinyD(c_dim=c_dim), **kwargs)


def raw_D(ctx):
    return ctx.D._D     # the module behind the plugins' narrow view (tests call it directly)


# Options under which a method actually transforms images in the contract tests (defaults otherwise).
ENABLED = {'ada': dict(p=0.5), 'fixed': dict(p=0.5)}


def make(name, c_dim=0, **kwargs):
    m = create_augment(name, **{**ENABLED.get(name, {}), **kwargs})
    m.setup(make_ctx(c_dim))
    return m


def batch(seed=0, c_dim=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand([N, 3, RES, RES], generator=g) * 2 - 1
    c = torch.eye(c_dim)[torch.arange(N) % c_dim] if c_dim else torch.zeros([N, 0])
    return img, c


def gen_fn_of(seed=1, c_dim=0):
    calls = []
    def gen_fn():
        calls.append(1)
        return batch(seed, c_dim)
    return gen_fn, calls


# Options that turn a method off (identity on images). Methods not listed must be identity by default
# for augment(); add an entry when registering a method that augments by default.
DISABLED = {'diffaug': dict(p=0), 'apa': dict(p=0, adaptive=False), 'ada': dict(p=0), 'fixed': dict(p=0)}
METHODS = list_augments()

#----------------------------------------------------------------------------
# Contract tests, parametrized over the registry.

@pytest.mark.parametrize('name', METHODS)
def test_shape_dtype_device(name):
    m = make(name)
    img, c = batch()
    out = m.augment(img, c)
    assert out.shape == img.shape and out.dtype == img.dtype and out.device == img.device
    mixed, mixed_c = m.mix_reals(img, c, gen_fn_of()[0])
    assert mixed.shape == img.shape and mixed.dtype == img.dtype and mixed_c.shape == c.shape


@pytest.mark.parametrize('name', METHODS)
def test_disabled_is_identity(name):
    m = make(name, **DISABLED.get(name, {}))
    img, c = batch()
    assert torch.equal(m.augment(img, c), img)
    gen_fn, calls = gen_fn_of()
    mixed, mixed_c = m.mix_reals(img, c, gen_fn)
    assert torch.equal(mixed, img) and torch.equal(mixed_c, c)
    assert not calls, 'a disabled method must not generate images'


@pytest.mark.parametrize('name', METHODS)
def test_differentiable(name):
    m = make(name)
    img, c = batch()
    img.requires_grad_(True)
    out = m.augment(img, c)
    (out * torch.randn_like(out)).sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert img.grad.abs().sum() > 0


@pytest.mark.parametrize('name', METHODS)
def test_deterministic_under_seed(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        m = make(name)
        torch.manual_seed(99)   # the method's own generator, not the global RNG, decides
        img, c = batch()
        out = m.augment(img, c)
        mixed, _ = m.mix_reals(img, c, gen_fn_of()[0])
        outs.append((out, mixed))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def _is_plain(x):
    if isinstance(x, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_is_plain(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str, torch.Tensor, np.ndarray, np.generic))


def _exercise(m, steps=5):
    img, c = batch()
    for i in range(steps):
        m.augment(img, c)
        m.mix_reals(img, c, gen_fn_of()[0])
        m.observe_real_logits(torch.full([N, 1], 1.0))
        m.update((i + 1) * N, N)


@pytest.mark.parametrize('name', METHODS)
def test_plugin_state_round_trip(name):
    m = make(name)
    _exercise(m)
    state = m.plugin_state()
    assert _is_plain(state), f'{name}: plugin_state must hold plain data only'
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    m2 = make(name)
    m2.load_plugin_state(state)
    img, c = batch(3)
    assert torch.equal(m.augment(img, c), m2.augment(img, c))
    a, b = m.mix_reals(img, c, gen_fn_of()[0]), m2.mix_reals(img, c, gen_fn_of()[0])
    assert torch.equal(a[0], b[0])
    assert m.stats() == m2.stats()


@pytest.mark.parametrize('name', METHODS)
def test_pickles(name):
    m = make(name)
    _exercise(m, 2)
    m2 = pickle.loads(pickle.dumps(m))
    img, c = batch(4)
    assert torch.equal(m.augment(img, c), m2.augment(img, c))
    assert m.describe() and isinstance(m.describe(), str)

#----------------------------------------------------------------------------
# Spec grammar.

def test_parse_spec_forms():
    assert parse_spec('noaug') == [('noaug', {})]
    assert parse_spec('diffaug:color,translation,cutout') == [('diffaug', {'policy': 'color,translation,cutout'})]
    assert parse_spec(' dag:rotation,cropping,weight_d=0.2 + apa:shared_p=0,target=0.4 ') == [
        ('dag', {'policy': 'rotation,cropping', 'weight_d': 0.2}), ('apa', {'shared_p': False, 'target': 0.4})]
    assert parse_spec('apa:swap_labels,interval=8') == [('apa', {'swap_labels': True, 'interval': 8})]
    assert isinstance(parse_spec('apa:interval=8')[0][1]['interval'], int)


def test_canonical_spec_orders_and_round_trips():
    spec = 'dag:cropping,rotation,weight_g=0.5+diffaug:translation+apa:target=0.5,p=0.1'
    canon = canonical_spec(spec)
    assert canon == 'apa:p=0.1,target=0.5+diffaug:translation+dag:cropping,rotation,weight_g=0.5'
    assert canonical_spec(canon) == canon
    assert canonical_spec(parse_spec(canon)) == canon
    assert create_augment_stack(spec).spec == canon


@pytest.mark.parametrize('spec, needles', [
    ('', ['empty', 'noaug']),
    ('apa++dag', ['empty method', '"+"']),
    ('diffaugg', ['unknown method "diffaugg"', 'registered:', 'apa', 'Did you mean "diffaug"']),
    ('apa:targt=0.5', ['no option "targt"', 'allowed:', 'target', 'Did you mean "target"']),
    ('apa:target=high', ['target="high"', 'number']),
    ('apa:interval=2.5', ['interval="2.5"', 'integer']),
    ('apa:shared_p=maybe', ['shared_p="maybe"', 'boolean']),
    ('apa:color', ['no bare word "color"', 'key=value']),
    ('diffaug:', ['no options']),
    ('diffaug:color,,cutout', ['empty option']),
    ('apa:target=0.5,target=0.6', ['given twice']),
    ('diffaug:color,policy=cutout', ['"policy" is given twice']),
    ('apa:p=1.5', ['apa', 'p=1.5', '[0, 1]']),
    ('apa:target=1', ['target=1', '(0, 1)']),
    ('diffaug:color,rotate', ['unknown policy word "rotate"', 'color, translation, cutout']),
    ('dag:rotation,zoom', ['unknown transform group "zoom"', 'fliprot']),
    ('dag:weight_d=-1', ['weight_d=-1']),
])
def test_spec_errors(spec, needles):
    with pytest.raises(SpecError) as e:
        create_augment_stack(spec)
    msg = str(e.value)
    assert '\n' not in msg and f'"{spec}"' in msg, msg
    for needle in needles:
        assert needle in msg, msg

#----------------------------------------------------------------------------
# Combination rules.

@pytest.mark.parametrize('spec, needle', [
    ('apa+apa', 'more than once'),
    ('noaug+diffaug', 'noaug means no augmentation'),
    ('apa:shared_p', 'no ada or fixed'),
    ('diffaug:with_ada', 'neither is in the spec'),
])
def test_combination_rules(spec, needle):
    with pytest.raises(SpecError, match=needle.replace('(', r'\(')):
        create_augment_stack(spec)


def test_combination_rules_with_ada():
    with pytest.raises(SpecError, match='both augment every image'):
        create_augment_stack('ada+diffaug')
    with pytest.raises(SpecError, match='would be ignored'):
        create_augment_stack('ada+apa:shared_p,target=0.5')
    stack = create_augment_stack('diffaug:with_ada+ada')
    assert [m.name for m in stack.methods] == ['ada', 'diffaug']
    if 'fixed' in METHODS:
        with pytest.raises(SpecError, match='one ADA pipe'):
            create_augment_stack('ada+fixed')


def test_apa_shared_p_follows_ada():
    stack = create_augment_stack('ada:interval=1,kimg=1+apa:shared_p', make_ctx())
    apa, ada = stack.get('apa'), stack.get('ada')
    for _ in range(3):
        stack.observe_real_logits(torch.ones([N, 1]))
        stack.update(0, N)
    assert ada.p > 0 and apa.p == pytest.approx(ada.p)
    assert apa.controller.p == 0
    assert float(stack.upstream_augment_pipe().p) == pytest.approx(ada.p)


def test_combinations_that_work():
    for spec in ['diffaug+apa', 'apa+dag', 'diffaug+dag:rotation,translation', 'noaug']:
        stack = create_augment_stack(spec, make_ctx())
        img, c = batch()
        assert stack.augment(img, c).shape == img.shape

#----------------------------------------------------------------------------
# The stack: order, chaining, sums, stats, namespaced state.

def test_stack_order_and_hooks():
    ctx = make_ctx()
    stack = create_augment_stack('dag+diffaug+apa:p=1,adaptive=false', ctx)
    assert [m.name for m in stack.methods] == ['apa', 'diffaug', 'dag']
    assert stack.needs_features
    img, c = batch()
    gen_fn, calls = gen_fn_of(5)
    mixed, _ = stack.mix_reals(img, c, gen_fn)
    assert torch.equal(mixed, batch(5)[0]) and len(calls) == 1     # p=1: every real replaced
    assert set(stack.plugin_state()) == {'apa', 'diffaug', 'dag'}
    assert stack.extra_parameters('D') == stack.get('dag').extra_parameters('D')
    assert 'Progress/apa_p' in stack.stats()
    assert 'apa' in stack.describe() and 'dag' in stack.describe()


def test_stack_chains_augment_in_order():
    stack = create_augment_stack('diffaug:translation,seed=3+apa', make_ctx())
    img, c = batch()
    ref = create_augment('diffaug', policy='translation', seed=3)
    ref.setup(make_ctx())
    assert torch.equal(stack.augment(img, c), ref.augment(img, c))


class _Const(AugmentMethod):
    """Test-only method returning a fixed extra loss and stat."""
    def __init__(self, value, name):
        super().__init__()
        self.value, self.name = value, name

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        return torch.full([N, 1], self.value)

    def adjust_logits(self, logits, features, c, target, phase):
        return logits + self.value

    def stats(self):
        return {'X/shared': self.value, f'X/{self.name}': self.value}


def test_stack_sums_losses_chains_logits_merges_stats():
    stack = asa_plugin.AugmentStack([_Const(1.0, 'a'), _Const(2.0, 'b')])
    loss = stack.extra_loss('Dmain', None, *batch(), None, None)
    assert torch.equal(loss, torch.full([N, 1], 3.0))
    assert torch.equal(stack.adjust_logits(torch.zeros(N, 1), None, None, 'real', 'Gmain'), torch.full([N, 1], 3.0))
    assert stack.stats() == {'X/shared': 1.0, 'X/a': 1.0, 'X/b': 2.0}


def test_stack_state_round_trip_and_mismatch():
    a = create_augment_stack('apa:target=0.5+dag', make_ctx())
    _exercise(a)
    b = create_augment_stack('apa:target=0.5+dag', make_ctx())
    b.load_plugin_state(a.plugin_state())
    assert torch.equal(a.get('dag').head_weight, b.get('dag').head_weight)
    assert a.get('apa').p == b.get('apa').p
    with pytest.raises(ValueError, match='does not match'):
        create_augment_stack('apa', make_ctx()).load_plugin_state(a.plugin_state())


def test_stack_pickles_with_shared_p():
    stack = create_augment_stack('ada:interval=1,kimg=1+apa:shared_p', make_ctx())
    for _ in range(2):
        stack.observe_real_logits(torch.ones([N, 1]))
        stack.update(0, N)
    copy = pickle.loads(pickle.dumps(stack))
    assert copy.spec == stack.spec and stack.get('apa').p > 0 and copy.get('apa').p == pytest.approx(stack.get('apa').p)
    copy.observe_real_logits(torch.ones([N, 1]))
    copy.update(0, N)
    assert copy.get('apa').p == pytest.approx(copy.get('ada').p)     # still linked after unpickling
    img, c = batch()
    assert torch.equal(copy.augment(img, c), stack.augment(img, c))

#----------------------------------------------------------------------------
# DiffAugment op ranges (docs/augmentations.md "diffaug").

def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_diffaug_brightness_range():
    x = torch.zeros([512, 3, 4, 4])
    shift = rand_brightness(x, _gen())[:, 0, 0, 0]
    assert shift.min() >= -0.5 and shift.max() < 0.5 and shift.max() - shift.min() > 0.9


def _scale_about(x, y, mean_dims):
    # Per-sample factor k with y - m(y) == k * (x - m(x)) where m is the mean the op keeps.
    dev, out = x - x.mean(mean_dims, keepdim=True), y - y.mean(mean_dims, keepdim=True)
    k = (out * dev).flatten(1).sum(1) / dev.square().flatten(1).sum(1)
    assert torch.allclose(out, k.reshape(-1, 1, 1, 1) * dev, atol=1e-4)
    assert torch.allclose(y.mean(mean_dims), x.mean(mean_dims), atol=1e-5)
    return k


def test_diffaug_saturation_and_contrast_ranges():
    x = torch.randn([512, 3, 4, 4])
    s = _scale_about(x, rand_saturation(x, _gen()), 1)
    assert s.min() >= 0 and s.max() < 2 and s.max() - s.min() > 1.8
    k = _scale_about(x, rand_contrast(x, _gen()), [1, 2, 3])
    assert k.min() >= 0.5 - 1e-5 and k.max() < 1.5 + 1e-5 and k.max() - k.min() > 0.9


def test_diffaug_translation_range_and_zero_fill():
    M, H = 400, RES
    ids = (torch.arange(H * H, dtype=torch.float32) + 1).reshape(1, 1, H, H).expand(M, 3, H, H)
    out = rand_translation(ids, _gen(), 0.125)
    smax = int(H * 0.125 + 0.5)
    assert smax == H // 8
    shifts = set()
    for i in range(M):
        o = out[i, 0]
        nz = o.nonzero()
        r, col = nz[0].tolist()
        src = int(o[r, col].item()) - 1
        th, tw = src // H - r, src % H - col
        assert abs(th) <= smax and abs(tw) <= smax
        expected = torch.zeros(H, H)
        rr, cc = torch.meshgrid(torch.arange(H), torch.arange(H), indexing='ij')
        valid = (rr + th >= 0) & (rr + th < H) & (cc + tw >= 0) & (cc + tw < H)
        expected[valid] = ids[0, 0][(rr + th)[valid], (cc + tw)[valid]]
        assert torch.equal(o, expected)
        shifts.add((th, tw))
    assert len(shifts) == (2 * smax + 1) ** 2   # every shift in range occurs


def test_diffaug_cutout_area_quarter():
    x = torch.ones([400, 3, RES, RES])
    out = rand_cutout(x, _gen(), 0.5)
    zeros = (out[:, 0] == 0)
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == RES * RES // 4 and counts.min() >= 1
    assert (counts < RES * RES // 4).any()   # a box can hang partly outside
    for i in range(50):     # the zeros form one axis-aligned box
        rows, cols = zeros[i].any(1).nonzero(), zeros[i].any(0).nonzero()
        assert counts[i] == len(rows) * len(cols)
    assert torch.equal(out[:, 0], out[:, 2])     # the same box on every channel


def test_diffaug_policy_order_and_p():
    m = make('diffaug', policy='cutout', p=0.5, seed=0)
    x = torch.ones([400, 3, RES, RES])
    changed = (m.augment(x, None) != x).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6

#----------------------------------------------------------------------------
# APA (docs/augmentations.md "apa").

def test_apa_mixing_rate_and_labels():
    M, c_dim = 4000, 3
    m = create_augment('apa', p=0.3, adaptive=False, swap_labels=True, seed=0)
    real = torch.zeros([M, 1, 2, 2])
    real_c = torch.eye(c_dim)[torch.zeros(M, dtype=torch.long)]
    fake = torch.ones([M, 1, 2, 2])
    fake_c = torch.eye(c_dim)[torch.full([M], 2)]
    mixed, mixed_c = m.mix_reals(real, real_c, lambda: (fake, fake_c))
    swapped = mixed[:, 0, 0, 0] == 1
    assert abs(swapped.float().mean().item() - 0.3) < 0.03
    assert torch.equal(mixed_c[swapped], fake_c[swapped]) and torch.equal(mixed_c[~swapped], real_c[~swapped])
    m = create_augment('apa', p=0.3, adaptive=False, seed=0)
    _, kept_c = m.mix_reals(real, real_c, lambda: (fake, fake_c))
    assert torch.equal(kept_c, real_c)      # default = official: the real label stays


def test_apa_adaptive_p_rises_and_falls():
    m = make('apa', interval=2, kimg=1)
    for _ in range(8):
        m.observe_real_logits(torch.ones([N, 1]))   # D overfits: r_t = 1 > 0.6
        m.update(0, N)
    high = m.p
    assert high == pytest.approx(4 * 2 * N / 1000)
    for _ in range(4):
        m.observe_real_logits(-torch.ones([N, 1]))
        m.update(0, N)
    assert m.p < high
    assert m.stats()['Progress/apa_p'] == m.p


def test_apa_resume_uses_faster_kimg():
    m = create_augment('apa')
    m.setup(make_ctx(resumed=True))
    assert m.controller.kimg == 100
    m = create_augment('apa', kimg=300)
    m.setup(make_ctx(resumed=True))
    assert m.controller.kimg == 300


def test_apa_shared_p_source():
    m = create_augment('apa', shared_p=True)
    source = AugmentMethod()
    source.p = 0.42
    m.set_p_source(source)
    assert m.p == pytest.approx(0.42)
    m.observe_real_logits(torch.ones([N, 1]))
    m.update(0, N)
    assert m.controller.p == 0      # its own controller stays idle

#----------------------------------------------------------------------------
# DAG (docs/augmentations.md "dag").

@pytest.mark.parametrize('policy, heads', [('rotation', 3), ('fliprot', 3), ('cropping', 4), ('translation', 1),
                                           ('rotation,cropping', 7), ('rotation,fliprot,cropping,translation,cutout', 12)])
def test_dag_head_count(policy, heads):
    m = make('dag', policy=policy)
    assert m.num_heads == heads
    assert list(m.head_weight.shape) == [heads, 1, 8]
    assert [p.shape for p in m.extra_parameters('D')] == [m.head_weight.shape, m.head_bias.shape]
    assert m.extra_parameters('G') == []


def test_dag_weights():
    m = make('dag', policy='rotation,cropping,translation')
    weights = [w for _, _, w in m.plan]
    assert weights == [0.25] * 3 + [0.2] * 4 + [0.5]


def _run_D_of(D):
    def run_D(img, c, augment=True):
        return D(img, c, return_features=True)
    return run_D


@pytest.mark.parametrize('c_dim', [0, 3])
def test_dag_loss_matches_formula(c_dim):
    ctx = make_ctx(c_dim)
    m = create_augment('dag', policy='rotation', weight_d=0.3, weight_g=0.7)
    m.setup(ctx)
    D = raw_D(ctx)
    real, real_c = batch(0, c_dim)
    fake, fake_c = batch(1, c_dim)

    def head(x, c, k):
        _, f = D(torch.rot90(x, k + 1, dims=(2, 3)), c, return_features=True)
        out = f @ (m.head_weight[k] / math.sqrt(f.shape[1])).t() + m.head_bias[k]
        if c_dim:
            out = (out * D.mapping(None, c)).sum(1, keepdim=True) / math.sqrt(out.shape[1])
        return out

    want_D = sum(0.25 * (F.softplus(head(fake, fake_c, k)) + F.softplus(-head(real, real_c, k))) for k in range(3)) * 0.3
    got_D = m.extra_loss('Dmain', _run_D_of(D), real, real_c, fake, fake_c)
    assert got_D.shape == (N, 1) and torch.allclose(got_D, want_D, atol=1e-6)
    want_G = sum(0.25 * F.softplus(-head(fake, fake_c, k)) for k in range(3)) * 0.7
    got_G = m.extra_loss('Gmain', _run_D_of(D), real, real_c, fake, fake_c)
    assert torch.allclose(got_G, want_G, atol=1e-6)
    assert m.extra_loss('Dreg', _run_D_of(D), real, real_c, fake, fake_c) is None


def test_dag_gradients_reach_heads_only_in_D_phase():
    ctx = make_ctx()
    m = create_augment('dag')
    m.setup(ctx)
    real, c = batch(0)
    fake = batch(1)[0].requires_grad_(True)
    m.extra_loss('Gmain', _run_D_of(raw_D(ctx)), real, c, fake, c).mean().backward()
    assert m.head_weight.grad is None and fake.grad.abs().sum() > 0
    m.extra_loss('Dmain', _run_D_of(raw_D(ctx)), real, c, fake.detach(), c).mean().backward()
    assert m.head_weight.grad.abs().sum() > 0 and m.head_bias.grad.abs().sum() > 0


def test_method_random_ranks():
    from asa_plugin.rng import MethodRandom
    r0, r1 = MethodRandom(5), MethodRandom(5)
    r1.fold_in_rank(1)
    r1.fold_in_rank(1)      # idempotent
    draw = lambda r: torch.rand(4, generator=r.generator('cpu'))
    assert not torch.equal(draw(r0), draw(r1))
    saved = r0.state_dict()
    same, other = MethodRandom(9), MethodRandom(9)
    other.fold_in_rank(1)
    same.load_state_dict(saved)
    other.load_state_dict(saved)      # rank 0's state on rank 1: a derived stream, not a copy
    expected = draw(r0)
    assert torch.equal(draw(same), expected) and not torch.equal(draw(other), expected)


def test_dag_views():
    from asa_plugin.dag import dag_view
    x = torch.arange(16.).reshape(1, 1, 4, 4)
    assert torch.equal(dag_view(x, 'rot180'), x.flip(2).flip(3))
    assert torch.equal(dag_view(x, 'flip_w'), x.flip(3))
    crop = dag_view(x, 'crop_br')
    assert crop[0, 0, -1, -1] == 15 and crop[0, 0, 0, 0] == 5     # 3x3 bottom-right corner, nearest resize

#----------------------------------------------------------------------------

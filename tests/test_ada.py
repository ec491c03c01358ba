"""The `ada` and `fixed` methods: options, presets, the p loop into the upstream pipe, state."""

import pytest
import torch

import asa_plugin
from asa_plugin.ada import OPS, PRESETS, AdaptiveAugment, FixedAugment, pipe_kwargs
from asa_plugin.base import PluginContext

def ctx(resumed=False, rank=0):
    return PluginContext(device=torch.device('cpu'), batch_size=8, batch_gpu=8, rank=rank, resumed=resumed)

#----------------------------------------------------------------------------

def test_presets_match_upstream_augpipe():
    blit, geom = {'xflip', 'rotate90', 'xint'}, {'scale', 'rotate', 'aniso', 'xfrac'}
    color = {'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}
    expected = dict(blit=blit, geom=geom, color=color, filter={'imgfilter'}, noise={'noise'}, cutout={'cutout'},
                    bg=blit | geom, bgc=blit | geom | color, bgcf=blit | geom | color | {'imgfilter'},
                    bgcfn=blit | geom | color | {'imgfilter', 'noise'}, bgcfnc=set(OPS))
    assert set(PRESETS) == set(expected)
    for name, ops in expected.items():
        assert pipe_kwargs(name) == {op: 1 for op in OPS if op in ops}, name
    assert pipe_kwargs('blit,noise') == dict(xflip=1, rotate90=1, xint=1, noise=1)
    with pytest.raises(ValueError, match='"bgx" is neither a preset'):
        pipe_kwargs('bgx')

def test_spec_words_select_the_pipe():
    stack = asa_plugin.create_augment_stack('ada:bgcfnc,target=0.7')
    ada = stack.get('ada')
    assert ada.pipe.cutout == 1.0 and ada.pipe.noise == 1.0 and ada.controller.target == 0.7
    assert stack.spec == 'ada:bgcfnc,target=0.7'
    assert asa_plugin.create_augment_stack('ada').get('ada').pipe.imgfilter == 0.0   # default bgc
    fixed = asa_plugin.create_augment_stack('fixed:xflip,p=0.25').get('fixed')
    assert fixed.p == 0.25 and fixed.pipe.xflip == 1.0 and fixed.pipe.rotate90 == 0.0

@pytest.mark.parametrize('kwargs, message', [
    (dict(target=0), 'target=0 is outside'), (dict(target=1.2), 'target=1.2 is outside'),
    (dict(interval=0), 'interval=0'), (dict(kimg=-5), 'kimg=-5'), (dict(p=-0.1), 'p=-0.1'),
    (dict(pipe='spin'), 'pipe="spin"'),
])
def test_ada_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveAugment(**kwargs)

def test_fixed_needs_p_in_unit_interval():
    with pytest.raises(ValueError, match='p is required'):
        FixedAugment()
    with pytest.raises(ValueError, match=r'p=1.5 is outside \[0, 1\]'):
        FixedAugment(p=1.5)
    with pytest.raises(ValueError, match='fixed: p=-1'):
        asa_plugin.create_augment_stack('fixed:p=-1')

#----------------------------------------------------------------------------

def test_kimg_default_depends_on_resume():
    fresh, resumed, explicit = AdaptiveAugment(), AdaptiveAugment(), AdaptiveAugment(kimg=50)
    fresh.setup(ctx()); resumed.setup(ctx(resumed=True)); explicit.setup(ctx(resumed=True))
    assert (fresh.controller.kimg, resumed.controller.kimg, explicit.controller.kimg) == (500, 100, 50)
    assert 'kimg=100' in resumed.describe()

def test_p_follows_the_logits_into_the_upstream_pipe():
    m = AdaptiveAugment(interval=2, kimg=1)
    m.setup(ctx())
    img = torch.rand([4, 3, 16, 16])
    assert torch.equal(m.augment(img, None), img)          # p = 0: untouched
    for _ in range(4):                                     # D overfits: every real called real
        m.observe_real_logits(torch.ones([8, 1]))
        m.update(0, 8)
    assert m.p == pytest.approx(2 * 8 * 2 / 1000)
    assert m.stats() == {'Progress/augment': pytest.approx(m.p)}
    pipe = m.upstream_augment_pipe()
    assert type(pipe).__name__ == 'AugmentPipe' and pipe.p.item() == pytest.approx(m.p)
    assert not torch.equal(m.augment(img, None), img)
    for _ in range(40):                                    # D is fooled: p back to 0, not below
        m.observe_real_logits(-torch.ones([8, 1]))
        m.update(0, 8)
    assert m.p == 0 and pipe.p.item() == 0

def test_plugin_state_round_trip():
    a = AdaptiveAugment(interval=3, kimg=1, p=0.3, seed=5)
    a.setup(ctx())
    img = torch.rand([2, 3, 16, 16])
    for _ in range(4):
        a.observe_real_logits(torch.randn([8, 1]))
        a.update(0, 8)
        a.augment(img, None)
    state = a.plugin_state()
    b = AdaptiveAugment(seed=1)
    b.setup(ctx())
    b.load_plugin_state(state)
    assert b.p == a.p and b.pipe.p.item() == pytest.approx(a.p)
    assert torch.equal(a.augment(img, None), b.augment(img, None))   # same random stream
    f = FixedAugment(p=0.4, seed=2)
    g = FixedAugment(p=0.1)
    g.load_plugin_state(f.plugin_state())
    assert g.p == 0.4 and g.pipe.p.item() == pytest.approx(0.4)

def test_ranks_draw_different_streams():
    outs = []
    for rank in (0, 1):
        m = FixedAugment(p=1.0, seed=3)
        m.setup(ctx(rank=rank))
        outs.append(m.augment(torch.rand([2, 3, 16, 16], generator=torch.Generator().manual_seed(0)), None))
    assert not torch.equal(outs[0], outs[1])

#----------------------------------------------------------------------------

"""StyleGAN2Loss: plugin hooks in the documented order, the R1 gradient w.r.t. clean (mixed) reals,
the stats keys, pl_mean state, and resumed weights copied by name with a loud warning."""

import pytest
import torch

from asa_plugin.base import AugmentMethod, PluginContext
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator

#----------------------------------------------------------------------------
# Records every hook call; mixes reals by adding fakes*0 (keeps values, changes the tensor).

class Recorder(AugmentMethod):
    needs_features = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def augment(self, img, c):
        self.calls.append('augment')
        return img * 1.0

    def mix_reals(self, real_img, real_c, gen_fn):
        self.calls.append('mix_reals')
        gen_img, _gen_c = gen_fn()
        return real_img + gen_img * 0, real_c

    def observe_real_logits(self, logits):
        self.calls.append('observe_real_logits')

    def observe_features(self, features, c, kind):
        assert not features.requires_grad
        self.calls.append(f'observe_features:{kind}')

    def adjust_logits(self, logits, features, c, target, phase):
        assert features is not None
        self.calls.append(f'adjust_logits:{target}:{phase}')
        return logits

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        self.calls.append(f'extra_loss:{phase}')
        return None


@pytest.fixture
def nets():
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=16)).requires_grad_(False)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=256, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2)).requires_grad_(False)
    return G, D


def _batch():
    return torch.randn(4, 3, 8, 8), torch.zeros(4, 0), torch.randn(4, 16), torch.zeros(4, 0)


def test_hooks_are_called_in_documented_order(nets):
    G, D = nets
    rec = Recorder()
    rec.setup(PluginContext(device=torch.device('cpu'), img_resolution=8, D=D))
    loss = StyleGAN2Loss('cpu', G, D, augment=rec, r1_gamma=1, pl_weight=2)
    expected = {
        'Gmain': ['augment', 'adjust_logits:real:Gmain', 'extra_loss:Gmain'],
        'Greg':  ['extra_loss:Greg'],
        'Dmain': ['augment', 'observe_features:fake', 'adjust_logits:fake:Dmain',
                  'mix_reals', 'augment', 'observe_real_logits', 'observe_features:real', 'adjust_logits:real:Dmain', 'extra_loss:Dmain'],
        'Dreg':  ['mix_reals', 'augment', 'extra_loss:Dreg'],
    }
    for phase, calls in expected.items():
        rec.calls.clear()
        module = G if phase.startswith('G') else D
        module.requires_grad_(True)
        total = loss.accumulate_gradients(phase, *_batch(), gain=1)
        module.requires_grad_(False)
        assert rec.calls == calls, phase
        assert torch.isfinite(total)
        assert any(p.grad is not None for p in module.parameters()), phase
        for p in module.parameters():
            p.grad = None


def test_r1_is_taken_through_the_augmentation_wrt_clean_reals(nets):
    G, D = nets
    real = torch.randn(4, 3, 8, 8)
    class Double(AugmentMethod):
        def augment(self, img, c):
            return img * 2
    loss = StyleGAN2Loss('cpu', G, D, augment=Double(), r1_gamma=2)
    from torch_utils import training_stats
    training_stats.reset()
    collector = training_stats.Collector(regex='Loss/.*')
    D.requires_grad_(True)
    loss.accumulate_gradients('Dreg', real, torch.zeros(4, 0), torch.randn(4, 16), torch.zeros(4, 0), gain=1)
    D.requires_grad_(False)
    # Expected: |d D(2x) / dx|^2 = 4 |D'(2x)|^2.
    x = real.clone().requires_grad_(True)
    grads, = torch.autograd.grad(D(x * 2, torch.zeros(4, 0)).sum(), x)
    collector.update()
    assert collector.mean('Loss/r1_penalty') == pytest.approx(grads.square().flatten(1).sum(1).mean().item(), rel=1e-4)
    assert collector.names() == ['Loss/r1_penalty', 'Loss/D/reg']
    training_stats.reset()


def test_pl_mean_is_state(nets):
    G, D = nets
    loss = StyleGAN2Loss('cpu', G, D, pl_weight=2)
    G.requires_grad_(True)
    loss.accumulate_gradients('Greg', *_batch(), gain=4)
    assert loss.pl_mean.item() > 0
    other = StyleGAN2Loss('cpu', G, D)
    other.load_state_dict(loss.state_dict())
    assert other.pl_mean.item() == loss.pl_mean.item()


def test_copy_by_name_lists_every_mismatch():
    from training import run_state
    src = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    dst = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    problems = run_state.copy_by_name(src, dst, 'G')
    assert torch.equal(dst[0].weight, src[0].weight)
    assert any('G.1.weight: shape [1, 3]' in p for p in problems)
    assert any(p.startswith('G.2.weight: not in the resume pickle') for p in problems)
    assert len(problems) == 4

#----------------------------------------------------------------------------

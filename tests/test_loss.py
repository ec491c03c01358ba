"""StyleGAN2Loss: plugin hooks in the documented order, the R1 gradient w.r.t. clean (mixed) reals,
the stats keys, pl_mean state, and resumed weights copied by name with a loud warning."""

import numpy as np
import pytest
import torch

from asa_plugin.base import AugmentMethod, PluginContext
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator

from _call_order import EXPECTED, Recorder

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
    for phase, calls in EXPECTED.items():
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
    assert collector.names() == ['Loss/scores/real', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/D/reg']
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
#----------------------------------------------------------------------------
# Method wiring pinned to the official code's formulas (docs/augmentations.md).

class Tap(AugmentMethod):
    """Records every image batch that reaches D's augmentation, in call order."""
    def __init__(self):
        super().__init__()
        self.seen = []

    def augment(self, img, c):
        self.seen.append(img.detach().clone())
        return img


def _stack(*methods):
    from asa_plugin.stack import AugmentStack
    return AugmentStack(list(methods))


def test_apa_pseudo_reals_are_the_G_step_fakes_of_the_same_round(nets):
    # DeceiveD: x~ = m * G(z_G) + (1 - m) * x with z_G the G step's latents, not the D-fake batch's.
    # With p = 1 every real is replaced, so D's real pass must see exactly the G step's fakes.
    from asa_plugin import create_augment
    G, D = nets
    apa, tap = create_augment('apa', p=1.0, adaptive=False, seed=0), Tap()
    stack = _stack(apa, tap)
    stack.setup(PluginContext(device=torch.device('cpu'), img_resolution=8, D=D))
    loss = StyleGAN2Loss('cpu', G, D, augment=stack, r1_gamma=1, style_mixing_prob=0)
    real, c = torch.randn(4, 3, 8, 8), torch.zeros(4, 0)
    G.requires_grad_(True)
    g_fakes = []
    for round_idx in range(2):      # two batch_gpu rounds of the G step, different latents each
        tap.seen.clear()
        loss.accumulate_gradients('Gmain', real, c, torch.randn(4, 16), c, gain=1, round_idx=round_idx)
        g_fakes.append(tap.seen[0])
    G.requires_grad_(False)
    D.requires_grad_(True)
    tap.seen.clear()
    loss.accumulate_gradients('Dmain', real, c, torch.randn(4, 16), c, gain=1, round_idx=1)
    d_fakes, d_reals = tap.seen[0], tap.seen[1]
    assert torch.equal(d_reals, g_fakes[1])
    assert not torch.allclose(d_reals, d_fakes) and not torch.allclose(d_reals, g_fakes[0])
    tap.seen.clear()
    loss.accumulate_gradients('Dreg', real, c, torch.randn(4, 16), c, gain=1, round_idx=1)
    assert torch.equal(tap.seen[0], g_fakes[1])     # R1 regularizes the same mixed batch
    D.requires_grad_(False)
    assert loss.state_dict().keys() == {'pl_mean'}  # the fakes are never part of the saved state


@pytest.mark.parametrize('name', ['ada', 'apa'])
def test_controllers_count_the_signs_of_the_R1_pass(nets, name):
    # Upstream reports Loss/signs/real in Dmain and in Dr1; the controller's r_t is the mean over
    # both: r_t = (sum sign D(x_main) + sum sign D(x_reg)) / (N_main + N_reg).
    from asa_plugin import create_augment
    G, D = nets
    method = create_augment(name, interval=1, kimg=1, seed=0)
    method.setup(PluginContext(device=torch.device('cpu'), img_resolution=8, D=D))
    loss = StyleGAN2Loss('cpu', G, D, augment=method, r1_gamma=1)
    c = torch.zeros(4, 0)
    x_main, x_reg = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8) * 3
    D.requires_grad_(True)
    loss.accumulate_gradients('Dmain', x_main, c, torch.randn(4, 16), c, gain=1)
    assert method.controller.pending()[1] == 4
    loss.accumulate_gradients('Dreg', x_reg, c, torch.randn(4, 16), c, gain=16)
    D.requires_grad_(False)
    with torch.no_grad():
        signs = D(x_main, c).sign().sum() + D(x_reg, c).sign().sum()
    assert method.controller.pending() == (signs.item(), 8.0)
    method.update(0, 4)
    assert method.controller.last_r_t == signs.item() / 8
    step = 4 * 1 / (1 * 1000)   # batch * interval / (kimg * 1000)
    assert method.controller.p == max(0.0, step * float(np.sign(signs.item() / 8 - 0.6)))


def test_dag_counts_the_main_loss_once_per_group(nets):
    # Official BigGAN example, full policy: L_D = L_0 + 1/4 (L_0 + 3 rotations) + 1/5 (L_0 + 4 crops)
    # + 1/2 (L_0 + translation) + 1/2 (L_0 + cutout): L_0 weighs 2.45, the heads 2.55 in all.
    from asa_plugin import create_augment
    from asa_plugin.dag import head_plan, main_weight
    from torch_utils import training_stats
    groups = ['rotation', 'cropping', 'translation', 'cutout']
    assert main_weight(groups) == pytest.approx(1 + 1/4 + 1/5 + 1/2 + 1/2) == pytest.approx(2.45)
    assert sum(w for _, _, w in head_plan(groups)) == pytest.approx(3/4 + 4/5 + 1/2 + 1/2) == pytest.approx(2.55)
    assert main_weight(groups, 0.2) == pytest.approx(1 + 0.2 * 1.45)
    G, D = nets
    dag = create_augment('dag', policy=','.join(groups), weight_d=0.5, weight_g=2, seed=0)
    dag.setup(PluginContext(device=torch.device('cpu'), img_resolution=8, D=D))
    loss = StyleGAN2Loss('cpu', G, D, augment=dag, r1_gamma=1)
    training_stats.reset()
    collector = training_stats.Collector(regex='Loss/(D/loss|G/loss|Dmain/extra|Gmain/extra)')
    D.requires_grad_(True)
    total_D = loss.accumulate_gradients('Dmain', *_batch(), gain=1)
    D.requires_grad_(False)
    G.requires_grad_(True)
    total_G = loss.accumulate_gradients('Gmain', *_batch(), gain=1)
    G.requires_grad_(False)
    collector.update()
    # Loss/D/loss and Loss/G/loss report L_0 unscaled; the totals carry (1 + w * 1.45) * L_0 + heads.
    want_D = (1 + 0.5 * 1.45) * collector.mean('Loss/D/loss') + collector.mean('Loss/Dmain/extra')
    want_G = (1 + 2 * 1.45) * collector.mean('Loss/G/loss') + collector.mean('Loss/Gmain/extra')
    assert total_D.item() == pytest.approx(want_D, rel=1e-5)
    assert total_G.item() == pytest.approx(want_G, rel=1e-5)
    assert dag.main_loss_weight('Dreg') == 1.0     # R1 is not scaled
    training_stats.reset()

"""The fast training iteration (fused Adam, NaN/Inf flags kept on the device) against the eager one
(per-tensor Adam, each phase's flag read by the host): same trajectory, same skip semantics, and
no host synchronisation inside an iteration (docs/benchmarks.md "Training loop on the GPU")."""

import copy
import json
import os

import pytest
import torch

from _training_utils import make_zip, tiny_options

#----------------------------------------------------------------------------
# 50 iterations of the tiny config with ADA, one tick each, with a NaN injected into one D gradient:
# the fast loop (flags on the device, read at the tick) and the eager one (each phase's flag read by
# the host before stepping) give the same per-tick losses, skip the same step, and end with the same
# networks. Both use the fused Adam; fused vs per-tensor Adam is the next test.

def _nan_in_D_grad(monkeypatch, which, built):
    # The which-th gradient flowing into D's output becomes NaN (the losses stay finite, so do the stats).
    from training import loop_setup
    build = loop_setup.build_networks.__wrapped__ if hasattr(loop_setup.build_networks, '__wrapped__') else loop_setup.build_networks
    def build_with_fault(*args, **kwargs):
        G, D, G_ema = build(*args, **kwargs)
        built.update(G=G, D=D, G_ema=G_ema)
        calls = [0]
        def hook(grad):
            calls[0] += 1
            return grad * float('nan') if calls[0] == which else grad
        def on_output(module, inputs, out):
            if out.requires_grad:
                out.register_hook(hook)
        D.b4.out.register_forward_hook(on_output)
        return G, D, G_ema
    build_with_fault.__wrapped__ = build
    monkeypatch.setattr(loop_setup, 'build_networks', build_with_fault)


def _run(tmp_path, name, data, monkeypatch, on_device):
    import functools
    from torch_utils import training_stats
    from training import nonfinite, training_loop as loop_module
    monkeypatch.setattr(loop_module, 'NonFiniteGuard', functools.partial(nonfinite.NonFiniteGuard, on_device=on_device))
    nets = {}
    _nan_in_D_grad(monkeypatch, 30, nets)
    run_dir = str(tmp_path / name)
    os.makedirs(run_dir)
    training_stats.reset()
    loop_module.training_loop(rank=0, **tiny_options(run_dir, data, kimg=0.2, tick=0.004, aug='ada:p=0.2', batch_size=4, batch_gpu=4,
                                                     image_snapshot_ticks=None, network_snapshot_ticks=None, G_reg_interval=4, D_reg_interval=4))
    return [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))], nets


def test_fast_loop_trajectory_equals_eager(tmp_path, small_grids, monkeypatch, capsys):
    data = make_zip(str(tmp_path / 'tiny.zip'))
    fast, fast_nets = _run(tmp_path, 'fast', data, monkeypatch, True)
    eager, eager_nets = _run(tmp_path, 'eager', data, monkeypatch, False)
    assert len(fast) == len(eager) == 50
    for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/G/reg', 'Loss/D/reg', 'Loss/scores/real', 'Nonfinite/skipped_steps']:
        got = torch.tensor([s[key]['mean'] for s in fast if key in s], dtype=torch.float64)
        want = torch.tensor([s[key]['mean'] for s in eager if key in s], dtype=torch.float64)
        assert got.shape == want.shape and got.numel() > 0, key
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=key)
    assert fast[-1]['Nonfinite/skipped_steps']['mean'] == 1
    assert capsys.readouterr().out.count('non-finite loss or gradient in phase') == 2
    for key in ['G', 'D', 'G_ema']:
        for (name, a), b in zip(fast_nets[key].state_dict().items(), eager_nets[key].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f'{key}.{name}')
    assert fast[-1]['Progress/augment']['mean'] == eager[-1]['Progress/augment']['mean']

#----------------------------------------------------------------------------
# Fused vs per-tensor Adam (what build_phases picks vs what it used before): fed the same 50
# gradients, G's parameters stay equal to float rounding. Inside a GAN run the two drift apart
# after about 10 iterations, as any two float orderings do (docs/benchmarks.md).

def test_fused_adam_matches_per_tensor_adam():
    from training import phases
    from training.networks import Generator
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32))
    nets = [G, copy.deepcopy(G)]
    initial = copy.deepcopy(G)
    opts = [phases.make_optimizer(list(net.parameters()), dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8), fused=fused)
            for net, fused in zip(nets, (True, False))]
    assert opts[0].defaults['fused'] and not opts[1].defaults['fused']
    gen = torch.Generator().manual_seed(0)
    for _step in range(50):
        grads = [torch.randn(p.shape, generator=gen) * 10 ** torch.randint(-6, 1, [], generator=gen).item() for p in G.parameters()]
        for net, opt in zip(nets, opts):
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(nets[0].parameters(), initial.parameters()))  # every tensor moved

#----------------------------------------------------------------------------
# The skip: a NaN gradient leaves parameters, Adam moments and step count exactly as they were,
# without a host read; the host learns of it at flush() (the tick).

def _tiny_phase():
    from training import phases
    w = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(torch.randn(3))
    opt = phases.make_optimizer([w, b], dict(class_name='torch.optim.Adam', lr=0.01, betas=[0, 0.99], eps=1e-8))
    return w, b, opt


def test_fused_adam_is_chosen_and_skips_on_a_device_flag(capsys):
    from torch_utils.host_sync import HostSyncCounter
    from training.nonfinite import NonFiniteGuard, can_skip_on_device
    w, b, opt = _tiny_phase()
    assert opt.defaults['fused'] and can_skip_on_device(opt)
    guard = NonFiniteGuard('skip')
    w.grad, b.grad = torch.ones(5), torch.ones(3)
    guard.step('Dmain', opt, 0, 0, torch.tensor(1.0), [w, b], 'cpu')
    saved = [t.clone() for t in (w, b, opt.state[w]['exp_avg_sq'], opt.state[w]['step'])]
    w.grad, b.grad = torch.ones(5), torch.tensor([1.0, float('nan'), 1.0])
    with HostSyncCounter() as syncs:
        guard.step('Dmain', opt, 1, 4, torch.tensor(2.0), [w, b], 'cpu')
    assert syncs.total() == 0, syncs.table()
    assert all(torch.equal(a, c) for a, c in zip(saved, (w, b, opt.state[w]['exp_avg_sq'], opt.state[w]['step'])))
    w.grad, b.grad = torch.ones(5), torch.ones(3)
    guard.step('Dmain', opt, 2, 8, torch.tensor(float('inf')), [w, b], 'cpu')  # a non-finite loss alone also skips
    assert torch.equal(w, saved[0]) and guard.counts == {}
    guard.flush()
    assert guard.counts == {'Dmain': 2}
    assert 'phase Dmain, step 1' in capsys.readouterr().out
    guard.step('Dmain', opt, 3, 12, torch.tensor(1.0), [w, b], 'cpu')
    assert not torch.equal(w, saved[0]) and float(opt.state[w]['step']) == 2.0


def test_eager_and_fast_skip_agree():
    from training.nonfinite import NonFiniteGuard
    results = []
    for fused in (True, False):
        torch.manual_seed(1)
        from training import phases
        w = torch.nn.Parameter(torch.randn(5))
        opt = phases.make_optimizer([w], dict(class_name='torch.optim.Adam', lr=0.01, betas=[0, 0.99], eps=1e-8), fused=fused)
        guard = NonFiniteGuard('skip')
        for step, grad in enumerate([torch.ones(5), torch.full([5], float('nan')), -torch.ones(5), torch.ones(5)]):
            w.grad = grad
            guard.step('Gmain', opt, step, 0, None, [w], 'cpu')
        guard.flush()
        results.append((w.detach().clone(), guard.counts))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    assert results[0][1] == results[1][1] == {'Gmain': 1}


def test_stop_mode_still_stops_at_the_step():
    from training.nonfinite import NonFiniteError, NonFiniteGuard
    w, b, opt = _tiny_phase()
    w.grad, b.grad = torch.full([5], float('nan')), torch.ones(3)
    with pytest.raises(NonFiniteError, match='phase Greg, step 7'):
        NonFiniteGuard('stop').step('Greg', opt, 7, 0, None, [w, b], 'cpu')

#----------------------------------------------------------------------------
# A whole training iteration (batch fetch, all four phases, EMA, augmentation update) reads no
# device value on the host. The reads the counter finds on the CPU are all of host tensors by design.

HOST_SIDE = {
    'training/loss.py': 'style-mixing coin from the CPU generator (upstream-compatible stream)',
    'training/networks.py': 'minibatch-std group size, a CPU scalar tensor kept for tracing',
}
# The device reads ADA still makes (docs/benchmarks.md): the geometric pad of each pipe call (a
# data-dependent size, as upstream's), and the controller's sign sums once per interval (4 iterations).
ADA_READS = {'asa_plugin/augment_pipe.py': 'tolist', 'asa_plugin/controller.py': 'tolist'}


@pytest.mark.parametrize('aug', ['noaug', 'ada:p=0.5'])
def test_iteration_has_no_host_sync(tmp_path, aug):
    from asa_plugin.base import PluginContext
    from torch_utils.host_sync import HostSyncCounter
    from training import loop_setup, nonfinite, phases, regularizers
    import dnnlib
    data = make_zip(str(tmp_path / 'tiny.zip'))
    o = tiny_options(str(tmp_path), data, batch_size=4, batch_gpu=4)
    device = torch.device('cpu')
    training_set = loop_setup.setup_dataset(o['training_set_kwargs'])
    G, D, G_ema = loop_setup.build_networks(training_set, o['G_kwargs'], o['D_kwargs'], device)
    ctx = PluginContext(device=device, c_dim=0, img_resolution=16, img_channels=3, batch_size=4, batch_gpu=4, num_gpus=1,
                        rank=0, total_kimg=1, resumed=False, D=D)
    augment = loop_setup.build_augment(aug, ctx)
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment=augment, **o['loss_kwargs'])
    all_phases = phases.build_phases(G, D, augment, o['G_opt_kwargs'], o['D_opt_kwargs'], 2, 2)
    guard = nonfinite.NonFiniteGuard('skip')
    data_iter = loop_setup.data_iterator(training_set, o['data_loader_kwargs'], 0, 1, 4, 0, 0, device)
    def iteration(batch_idx):  # all four phases run at even batch_idx
        batch = phases.fetch_batch(data_iter, training_set, all_phases, 4, G.z_dim, device)
        phases.run_phases(all_phases, loss, guard, batch, batch_idx, batch_idx * 4, device)
        phases.update_ema(G, G_ema, regularizers.ema_beta(4, 2.5, 0.05, batch_idx * 4))
        augment.update((batch_idx + 1) * 4, 4)
    iteration(0)  # warm-up: one-time probes of the ops
    with HostSyncCounter() as syncs:
        for batch_idx in range(1, 5):  # ADA's controller steps after the 4th iteration
            iteration(batch_idx)
    allowed = dict(HOST_SIDE, **(ADA_READS if aug != 'noaug' else {}))
    unexpected = [(what, site) for what, site in syncs.counts if site.split(':')[0] not in allowed]
    assert unexpected == [], syncs.table()
    if aug != 'noaug':
        reads = {site.split(':')[0]: count for (what, site), count in syncs.counts.items() if site.split(':')[0] in ADA_READS}
        assert reads['asa_plugin/controller.py'] == 1 and reads['asa_plugin/augment_pipe.py'] >= 4 * 2, syncs.table()
    assert syncs.total() > 0  # the counter does see the host-side reads (it would see a device one)

#----------------------------------------------------------------------------

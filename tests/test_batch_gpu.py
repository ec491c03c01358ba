"""--batch-gpu=auto (training/batch_gpu.py): the candidates, the memory rule, a probe that leaves
the run untouched, and the option from the CLI to the training loop."""

import click
import pytest
import torch

from _training_utils import make_zip, tiny_options
from training import batch_gpu as rule

#----------------------------------------------------------------------------

def test_candidates_respect_minibatch_std_groups():
    assert rule.valid_batch_gpus(64, 8) == [1, 2, 4, 8, 16, 32, 64]
    assert rule.valid_batch_gpus(12, 4) == [1, 2, 3, 4, 12]      # 6 cannot be split into groups of 4
    assert rule.valid_batch_gpus(16, None) == [1, 2, 4, 8, 16]


def test_rule_takes_the_largest_round_that_fits():
    GB = 2 ** 30
    # paper256-like: 0.8 GB fixed, 0.26 GB per image.
    assert rule.pick_batch_gpu(64, 8, 0.8 * GB, 0.26 * GB, 78 * GB) == 64
    assert rule.pick_batch_gpu(64, 8, 0.8 * GB, 0.26 * GB, 10 * GB) == 16   # 0.8 + 16 * 0.26 = 5 <= 8.5; 32 -> 9.1
    assert rule.pick_batch_gpu(64, 8, 0.8 * GB, 0.26 * GB, 0.5 * GB) == 1   # nothing fits: the smallest

#----------------------------------------------------------------------------
# The probe runs the real loss phases on copies: parameters, buffers, random streams and the
# statistics of the run are as before; the linear fit picks what the fake memory numbers allow.

def _nets():
    from training.networks import Discriminator, Generator
    common = dict(c_dim=0, img_resolution=8, img_channels=3)
    G = Generator(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32), **common)
    D = Discriminator(channel_base=256, channel_max=32, epilogue_kwargs=dict(mbstd_group_size=2), **common)
    return G.requires_grad_(False), D.requires_grad_(False)


def test_probe_leaves_the_run_untouched_and_fits_linearly():
    from torch_utils import training_stats
    training_stats.reset()
    G, D = _nets()
    before = {k: v.clone() for k, v in list(G.state_dict().items()) + [('D.' + k, v) for k, v in D.state_dict().items()]}
    training_stats.report('Loss/G/loss', torch.tensor([1.0, 3.0]))
    rng = torch.get_rng_state()
    seen = []
    def fake_measure(device, run):
        run()  # the real phases, forward and backward, on the copies
        seen.append(len(seen))
        return [10_000 + 4 * 1_000, 10_000 + 8 * 1_000][seen[-1]]  # 10 kB fixed + 1 kB per image, probed at rounds of 4 and 8
    loss_kwargs = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1)
    chosen = rule.auto_batch_gpu(G, D, None, loss_kwargs, 16, 2, torch.device('cpu'), fallback=16, measure=fake_measure, budget_bytes=22_000)
    assert seen == [0, 1]
    assert chosen == 8  # 10 kB + 8 x 1 kB <= 0.85 x 22 kB; 16 images would need 26 kB
    after = {k: v for k, v in list(G.state_dict().items()) + [('D.' + k, v) for k, v in D.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))
    assert torch.equal(torch.get_rng_state(), rng)
    collector = training_stats.Collector(regex='Loss/.*')
    assert collector.names() == ['Loss/G/loss'] and collector.num('Loss/G/loss') == 0  # nothing the probe reported
    training_stats.reset()


def test_off_cuda_auto_is_one_round():
    G, D = _nets()
    assert rule.auto_batch_gpu(G, D, None, {}, 16, 2, torch.device('cpu'), fallback=16) == 16

#----------------------------------------------------------------------------

def test_cli_value_and_training_loop(tmp_path, small_grids, capsys):
    from training import config
    from training.training_loop import training_loop
    assert config.BATCH_GPU.convert('auto', None, None) == 'auto' and config.BATCH_GPU.convert('8', None, None) == 8
    with pytest.raises(click.BadParameter, match='positive integer nor "auto"'):
        config.BATCH_GPU.convert('0', None, None)
    data = make_zip(str(tmp_path / 'tiny.zip'))
    _desc, options = config.setup_training_options(data=data, cfg='tiny', batch_gpu='auto', device='cpu', metrics=[])
    assert options['batch_gpu'] == 'auto'
    training_loop(rank=0, **tiny_options(str(tmp_path), data, kimg=0.008, tick=0.008, batch_gpu='auto', image_snapshot_ticks=None, network_snapshot_ticks=None))
    assert 'batch_gpu=auto: 8 images per GPU per round (1 rounds per phase)' in capsys.readouterr().out

#----------------------------------------------------------------------------

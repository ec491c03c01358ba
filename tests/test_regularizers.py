"""The pure pieces of training: regularizers, EMA, lazy-reg correction, statistics, data order,
image grids and atomic writes."""

import math
import os

import numpy as np
import pytest
import torch

from training import checkpoint, image_grid, regularizers
from training.sampler import ResumableSampler

#----------------------------------------------------------------------------

def test_logistic_loss_is_softplus_of_signed_logits():
    logits = torch.tensor([-3.0, 0.0, 2.0])
    assert torch.allclose(regularizers.logistic_loss(logits, 'real'), torch.log1p(torch.exp(-logits)))
    assert torch.allclose(regularizers.logistic_loss(logits, 'fake'), torch.log1p(torch.exp(logits)))
    with pytest.raises(ValueError, match='target'):
        regularizers.logistic_loss(logits, 'both')


def test_r1_penalty_is_per_sample_squared_norm():
    grads = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    expected = torch.stack([g.pow(2).sum() for g in grads])
    assert torch.allclose(regularizers.r1_penalty(grads), expected)


def test_r1_through_a_linear_D_matches_closed_form():
    # D(x) = <w, x>: the gradient w.r.t. x is w for every sample, so R1 = |w|^2.
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    grads, = torch.autograd.grad(logits.sum(), x, create_graph=True)
    assert torch.allclose(regularizers.r1_penalty(grads), w.pow(2).sum().expand(5))


def test_path_lengths_and_pl_penalty():
    grads = torch.zeros(2, 3, 4)
    grads[0, :, 0] = 2.0           # Each layer has norm 2 -> length 2.
    grads[1, 0, :] = 1.0           # One layer with norm 2, two with 0 -> sqrt(4/3).
    lengths = regularizers.path_lengths(grads)
    assert torch.allclose(lengths, torch.tensor([2.0, math.sqrt(4 / 3)]))
    pl_mean = torch.tensor(1.0)
    penalty, new_mean = regularizers.pl_penalty(lengths, pl_mean, 0.01)
    expected_mean = 1.0 + 0.01 * (lengths.mean() - 1.0)
    assert torch.allclose(new_mean, expected_mean) and not new_mean.requires_grad
    assert torch.allclose(penalty, (lengths - expected_mean) ** 2)
    assert pl_mean.item() == 1.0  # The input is not mutated.


def test_pl_noise_scale():
    torch.manual_seed(0)
    noise = regularizers.pl_noise(torch.zeros(64, 3, 16, 16))
    assert noise.std().item() == pytest.approx(1 / 16, rel=0.05)


def test_ema_beta():
    # First step of a ramped run: cur_nimg = 0 -> G_ema = G (beta 0).
    assert regularizers.ema_beta(32, 10, 0.05, 0) == 0.0
    # Without ramp-up the half-life is ema_kimg: after ema_kimg*1000/batch steps the weight halves.
    beta = regularizers.ema_beta(32, 10, None, 10**6)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # The ramp limits the half-life to cur_nimg * ema_rampup.
    assert regularizers.ema_beta(32, 10, 0.05, 1000) == pytest.approx(0.5 ** (32 / 50))


def test_lazy_reg_adjust_matches_upstream_examples():
    lr, betas = regularizers.lazy_reg_adjust(0.0025, (0, 0.99), 4)
    assert lr == pytest.approx(0.002) and betas == (0.0, pytest.approx(0.99 ** 0.8))
    lr, betas = regularizers.lazy_reg_adjust(0.0025, (0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17) and betas[1] == pytest.approx(0.99 ** (16 / 17))
    assert regularizers.lazy_reg_adjust(0.0025, [0, 0.99], None) == (0.0025, (0, 0.99))


def test_mixing_cutoff_range():
    assert regularizers.mixing_cutoff(10, 0.9, coin=0.95, u=0.5) == 10   # No mixing this batch.
    assert regularizers.mixing_cutoff(10, 0.0, coin=0.0, u=0.5) == 10
    cutoffs = {regularizers.mixing_cutoff(10, 0.9, coin=0.1, u=u) for u in np.linspace(0, 0.9999, 1000)}
    assert cutoffs == set(range(1, 10))

#----------------------------------------------------------------------------

def test_training_stats_collector():
    from torch_utils import training_stats
    training_stats.reset()
    collector = training_stats.Collector(regex='Test/.*')
    training_stats.report('Test/a', torch.tensor([1.0, 2.0, 3.0]))
    training_stats.report('Test/a', 5.0)
    training_stats.report('Other/b', 1.0)
    collector.update()
    assert collector.names() == ['Test/a']
    assert collector.num('Test/a') == 4 and collector.mean('Test/a') == pytest.approx(2.75)
    assert collector.std('Test/a') == pytest.approx(np.std([1, 2, 3, 5]))
    collector.update()  # Nothing new: keep_previous keeps the last interval.
    assert collector.num('Test/a') == 4
    training_stats.report('Test/a', 7.0)
    collector.update()
    assert collector.as_dict()['Test/a'] == {'num': 1, 'mean': 7.0, 'std': 0.0}
    training_stats.reset()

#----------------------------------------------------------------------------

def test_sampler_shards_and_resumes_exactly():
    data = list(range(10))
    stream = lambda sampler, n: [x for _, x in zip(range(n), iter(sampler))]
    full = stream(ResumableSampler(data, seed=3), 40)
    assert sorted(full[:10]) == data and sorted(full[10:20]) == data and full[:10] != full[10:20]
    # Resuming at any position continues the same stream.
    assert stream(ResumableSampler(data, seed=3, start=17), 23) == full[17:]
    # Two ranks interleave the global stream.
    r0, r1 = stream(ResumableSampler(data, rank=0, num_replicas=2, seed=3), 20), stream(ResumableSampler(data, rank=1, num_replicas=2, seed=3), 20)
    assert r0 == full[0::2] and r1 == full[1::2]
    assert stream(ResumableSampler(data, rank=1, num_replicas=2, seed=3, start=5), 15) == r1[5:]
    with pytest.raises(ValueError, match='empty'):
        ResumableSampler([])

#----------------------------------------------------------------------------

@pytest.mark.parametrize('res,expected', [(1024, (7, 4)), (512, (15, 8)), (256, (30, 16)), (128, (32, 32)), (16, (32, 32))])
def test_grid_shape(res, expected):
    assert image_grid.grid_shape(res, res) == expected


def test_tile_grid_layout_is_row_major():
    img = np.zeros([6, 1, 2, 2], dtype=np.float32)
    for i in range(6):
        img[i] = i * 50
    tiles = image_grid.tile_grid(img, drange=[0, 255], grid_size=(3, 2))
    assert tiles.shape == (4, 6, 1)
    assert tiles[0, 0, 0] == 0 and tiles[0, 2, 0] == 50 and tiles[0, 4, 0] == 100 and tiles[2, 0, 0] == 150
    assert image_grid.tile_grid(np.full([1, 3, 1, 1], 1.0), [-1, 1], (1, 1)).max() == 255

#----------------------------------------------------------------------------

def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / 'a.bin')
    checkpoint.atomic_write_bytes(path, b'old')
    def fail(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(checkpoint.os, 'fsync', fail)
    with pytest.raises(checkpoint.CheckpointWriteError, match='a.bin.*disk is full'):
        checkpoint.atomic_write_bytes(path, b'new')
    monkeypatch.undo()
    assert open(path, 'rb').read() == b'old'
    assert os.listdir(tmp_path) == ['a.bin']
    with pytest.raises(checkpoint.CheckpointWriteError, match='not writable'):
        checkpoint.atomic_write_bytes(str(tmp_path / 'missing' / 'b.bin'), b'x')


def test_append_line_closes_torn_line(tmp_path):
    path = str(tmp_path / 'stats.jsonl')
    with open(path, 'w') as f:
        f.write('{"a": 1}\n{"torn": ')
    checkpoint.atomic_append_line(path, '{"b": 2}')
    assert open(path).read().splitlines() == ['{"a": 1}', '{"torn": ', '{"b": 2}']


def test_save_checkpoint_pairs_and_verifies(tmp_path):
    pkl = checkpoint.save_checkpoint(str(tmp_path), 12000, {'G': None}, {'progress': {'cur_nimg': 12000}})
    state = checkpoint.state_path_for(pkl)
    assert pkl.endswith('network-snapshot-000012.pkl') and state.endswith('training-state-000012.pt')
    assert checkpoint.verify(pkl) and checkpoint.verify(state)
    assert checkpoint.find_latest(str(tmp_path)) == (pkl, state)
    assert checkpoint.load_state(state, pkl)['progress']['cur_nimg'] == 12000
    # A newer pickle without state: the older exact pair still wins; alone, it is used weights-only.
    newer = checkpoint.save_checkpoint(str(tmp_path), 13000, {'G': 1}, None)
    assert checkpoint.find_latest(str(tmp_path)) == (pkl, state)
    with pytest.raises(FileNotFoundError, match='belongs to'):
        checkpoint.load_state(state, newer)
    os.remove(pkl + '.sha256')
    with open(pkl, 'ab') as f:
        f.write(b'garbage')
    with open(pkl + '.sha256', 'w') as f:
        f.write('0' * 64 + '  x\n')
    with pytest.warns(UserWarning, match='weights only'):
        assert checkpoint.find_latest(str(tmp_path)) == (newer, None)

#----------------------------------------------------------------------------

def test_plugin_state_numpy_survives_weights_only(tmp_path):
    from training import run_state
    state = {'a': np.arange(6, dtype=np.float64).reshape(2, 3), 'b': [np.uint32(7), (1, 'x')], 'c': torch.ones(2), 'e': np.zeros([0])}
    path = str(tmp_path / 's.pt')
    torch.save(run_state.to_weights_only(state), path)
    back = run_state.from_weights_only(torch.load(path, weights_only=True))
    assert np.array_equal(back['a'], state['a']) and back['a'].dtype == np.float64
    assert back['b'] == [7, (1, 'x')] and torch.equal(back['c'], state['c']) and back['e'].shape == (0,)

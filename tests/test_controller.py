"""ADA's adaptive p controller: direction, step size, clamp, interval, state, multi-rank reduction."""

import math
import os
import tempfile

import pytest
import torch

from asa_plugin.controller import AdaptiveP, ada_p_update

#----------------------------------------------------------------------------

def test_update_rule_direction_and_size():
    step = 64 * 4 / (500 * 1000)
    assert ada_p_update(0.5, 0.9, 0.6, 64, 4, 500) == pytest.approx(0.5 + step)
    assert ada_p_update(0.5, 0.1, 0.6, 64, 4, 500) == pytest.approx(0.5 - step)
    assert ada_p_update(0.5, 0.6, 0.6, 64, 4, 500) == 0.5          # sign(0) = 0
    assert ada_p_update(0.0001, -1.0, 0.6, 64, 4, 500) == 0.0      # clamp at 0
    assert ada_p_update(1.0, 1.0, 0.6, 64, 4, 500) > 1.0           # no upper clamp (upstream)
    assert ada_p_update(0.3, math.nan, 0.6, 64, 4, 500) == 0.3     # nothing observed

#----------------------------------------------------------------------------

def test_raises_p_when_D_overfits_and_lowers_otherwise():
    c = AdaptiveP(target=0.6, interval=4, kimg=1, batch_size=10)
    for _ in range(40):  # D confidently calls 90% of reals real: overfitting.
        c.observe(torch.tensor([3.0] * 9 + [-3.0]))
        c.step()
    assert c.p == pytest.approx(10 * (10 * 4 / 1000))
    assert c.last_r_t == pytest.approx(0.8)
    p_high = c.p
    for _ in range(8):  # Half the reals are called fake: r_t = 0 < target.
        c.observe(torch.tensor([1.0, -1.0]))
        c.step()
    assert c.p == pytest.approx(p_high - 2 * 0.04)
    for _ in range(400):
        c.observe(-torch.ones(8))
        c.step()
    assert c.p == 0.0

#----------------------------------------------------------------------------

def test_interval_counts_calls_and_averages_all_observations():
    c = AdaptiveP(target=0.6, interval=3, kimg=1, batch_size=100)
    c.observe(torch.ones(4, 1))
    assert c.step() == 0.0 and c.step() == 0.0
    c.observe(-torch.ones(1, 1))  # Mean over both passes: (4 - 1) / 5 = 0.6 = target -> no change.
    assert c.step() == 0.0 and c.last_r_t == pytest.approx(0.6)
    c.observe(torch.ones(2)); c.observe(torch.ones(3))  # Several passes per iteration (Dmain + Dreg).
    c.step(); c.step()
    assert c.pending() == (5.0, 5.0)
    assert c.step(batch_size=50) == pytest.approx(50 * 3 / 1000)  # batch_size passed to step() wins.
    assert c.pending() == (0.0, 0.0)

#----------------------------------------------------------------------------

def test_state_round_trip_is_plain_data_and_exact():
    a = AdaptiveP(target=0.7, interval=4, kimg=2, batch_size=8, p=0.25)
    for i in range(6):
        a.observe(torch.randn(8))
        a.step()
    state = a.state_dict()
    assert all(isinstance(v, (int, float, type(None))) for v in state.values())
    b = AdaptiveP()
    b.load_state_dict(state)
    assert b.state_dict() == state
    torch.manual_seed(1)
    logits = [torch.randn(8) for _ in range(9)]
    for x in logits:
        a.observe(x); b.observe(x)
        assert a.step() == b.step()
    assert a.state_dict() == b.state_dict()

#----------------------------------------------------------------------------

def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match='target=1.5'):
        AdaptiveP(target=1.5)
    with pytest.raises(ValueError, match='interval=0'):
        AdaptiveP(interval=0)
    with pytest.raises(ValueError, match='kimg=-1'):
        AdaptiveP(kimg=-1)
    with pytest.raises(ValueError, match='batch_size'):
        AdaptiveP(interval=1).step()

#----------------------------------------------------------------------------
# Two gloo ranks: rank 0 sees all-positive logits, rank 1 all-negative and three times as many,
# so the global r_t is (4 - 12) / 16 = -0.5 and both ranks must lower p identically.

def _two_rank_worker(rank, init_file, result_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    c = AdaptiveP(target=0.6, interval=2, kimg=1, batch_size=10, p=0.5)
    c.observe(torch.ones(4) if rank == 0 else -torch.ones(12))
    c.step(); c.step()
    torch.save(dict(p=c.p, r=c.last_r_t), os.path.join(result_dir, f'{rank}.pt'))
    torch.distributed.destroy_process_group()

@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed unavailable')
def test_signs_are_reduced_across_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_two_rank_worker, args=(os.path.join(tmp, 'init'), tmp), nprocs=2)
        results = [torch.load(os.path.join(tmp, f'{r}.pt')) for r in range(2)]
    for res in results:
        assert res['r'] == pytest.approx(-0.5)
        assert res['p'] == pytest.approx(0.5 - 10 * 2 / 1000)

#----------------------------------------------------------------------------

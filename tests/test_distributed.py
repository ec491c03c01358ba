"""Device choice per process: cuda:rank with --gpus=N, cuda:LOCAL_RANK under torchrun (multi-node)."""

import pytest
import torch

from training import distributed, loop_setup
from training.nonfinite import nonfinite_flag

TORCHRUN_NODE1 = {'RANK': '9', 'WORLD_SIZE': '16', 'LOCAL_RANK': '1', 'LOCAL_WORLD_SIZE': '8'}

#----------------------------------------------------------------------------

@pytest.mark.parametrize('rank,environ,expected', [
    (0, {}, 0),
    (3, {}, 3),                                         # --gpus=4: one machine, rank == local index
    (9, TORCHRUN_NODE1, 1),                             # second node of 2x8: global rank 9 is GPU 1 there
    (0, {'RANK': '0', 'WORLD_SIZE': '2', 'LOCAL_RANK': '0'}, 0),
    (5, {'LOCAL_RANK': '2'}, 5),                        # LOCAL_RANK alone (no torchrun) is not trusted
])
def test_local_device_index(rank, environ, expected):
    assert distributed.local_device_index(rank, environ) == expected


def test_setup_device_uses_local_rank_under_torchrun(monkeypatch):
    # No GPU needed: the CUDA calls are recorded instead of made.
    chosen = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda dev: chosen.append(torch.device(dev)))
    for key, value in TORCHRUN_NODE1.items():
        monkeypatch.setenv(key, value)
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        dev = loop_setup.setup_device('cuda', rank=9, random_seed=0, num_gpus=16, cudnn_benchmark=True, allow_tf32=True, deterministic=False)
        assert dev == torch.device('cuda', 1) and chosen == [torch.device('cuda', 1)]
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

#----------------------------------------------------------------------------
# The guard's flag: computed on the device, reduced over ranks, read once.

def test_nonfinite_flag_and_any_rank_flag():
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.tensor([0.0, 1.0, 2.0])
    unused = torch.nn.Parameter(torch.ones(2))          # no gradient: ignored
    finite = nonfinite_flag(torch.tensor(1.5), [w, unused], 'cpu')
    assert finite.shape == (1,) and finite.dtype == torch.float32 and not distributed.any_rank_flag(finite)
    assert distributed.any_rank_flag(nonfinite_flag(torch.tensor(float('inf')), [w], 'cpu'))
    w.grad[1] = float('nan')
    assert distributed.any_rank_flag(nonfinite_flag(None, [w], 'cpu'))
    assert not distributed.any_rank_flag(nonfinite_flag(None, [unused], 'cpu'))

#----------------------------------------------------------------------------

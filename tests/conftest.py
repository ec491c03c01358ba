"""Shared test setup: repository root on sys.path, CUDA tests skipped without a GPU."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Deterministic; one thread avoids oversubscription on small, shared CI machines.
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _restore_torch_flags():
    # The training loop sets process-wide flags (deterministic algorithms); keep them out of other tests.
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def small_grids(monkeypatch):
    # Tiny preview grids (4x2) so that runs in tests write small images quickly.
    from training import image_grid
    monkeypatch.setattr(image_grid, 'grid_shape', lambda width, height: (4, 2))

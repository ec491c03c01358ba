"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
squared MMD with the cubic polynomial kernel, averaged over random subsets."""

from __future__ import annotations

import numpy as np

from metrics import metric_utils

#----------------------------------------------------------------------------
# Polynomial kernel k(a, b) = (a.b / n + 1)^3, n = feature dimension.

def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    return (a @ b.T / n + 1) ** 3

#----------------------------------------------------------------------------
# Unbiased MMD^2 of one subset pair (x, y), each [m, n]:
#   sum_{i!=j} (k(x_i,x_j) + k(y_i,y_j)) / (m(m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2

def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    a = polynomial_kernel(x, x) + polynomial_kernel(y, y)
    b = polynomial_kernel(x, y)
    return float((a.sum() - np.diag(a).sum()) / (m * (m - 1)) - 2 * b.sum() / (m * m))

#----------------------------------------------------------------------------
# KID: mean of mmd2_unbiased over num_subsets random subsets of size
# m = min(len(f1), len(f2), max_subset_size), drawn without replacement.

def kid_unbiased(f1: np.ndarray, f2: np.ndarray, num_subsets=100, max_subset_size=1000, rng=None) -> float:
    rng = np.random if rng is None else rng
    m = min(len(f1), len(f2), max_subset_size)
    if m < 2:
        raise metric_utils.MetricInputError(f'KID needs at least 2 real and 2 generated images, got {len(f2)} and {len(f1)}')
    total = 0.0
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), m, replace=False)].astype(np.float64)
        total += mmd2_unbiased(x, y)
    return total / num_subsets

#----------------------------------------------------------------------------

def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size, detector='inception') -> float:
    detector_kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=max_real).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan')
    rng = None if opts.seed is None else np.random.RandomState(opts.seed)
    return kid_unbiased(gen, real, num_subsets, max_subset_size, rng)

#----------------------------------------------------------------------------

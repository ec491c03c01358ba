"""Frechet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update
rule converge to a local Nash equilibrium"), on 2048-d Inception pool features."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from metrics import metric_utils

#----------------------------------------------------------------------------
# FID between two Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), real part.

def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    mean_term = np.square(mu1 - mu2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)   # singular products are normal for small sets
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # singular product (e.g. fewer samples than features): regularize the diagonal slightly
        eps = 1e-6 * np.eye(sigma1.shape[0])
        covmean = scipy.linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    return float(np.real(mean_term + np.trace(sigma1 + sigma2 - 2 * covmean)))

#----------------------------------------------------------------------------
# Feature statistics of reals (cached) and fakes, then the distance; NaN off rank 0.

def compute_fid(opts, max_real, num_gen, detector='inception') -> float:
    detector_kwargs = dict(return_features=True)    # pool features
    mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_mean_cov=True, max_items=max_real).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_mean_cov=True, max_items=num_gen).get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)

#----------------------------------------------------------------------------

"""KID and FD of one snapshot's G_ema against all images of a dataset, from ONE feature pass.

The repository's metrics compute each number with its own pass over the generated images;
here the same generated features feed both (the detector dominates the cost on the CPU).
The real features are cached on disk by metrics/metric_utils.py like any metric's.
"""

from __future__ import annotations

import numpy as np
import torch

import calc_metrics
from metrics import detectors, metric_utils
from metrics.frechet_inception_distance import frechet_distance
from metrics.kernel_inception_distance import kid_unbiased

DETECTOR_TITLES = {'inception': 'Inception-v3 (upstream inception-2015-12-05.pt)',
                   detectors.EFFNET: 'EfficientNet-Lite0 (offline; NOT comparable to Inception FID/KID)'}

#----------------------------------------------------------------------------

def choose_detector(detector: str, detector_dir=None) -> str:
    """'auto': Inception when its file is on disk (no download attempt), else the offline network."""
    if detector != 'auto':
        return detector
    try:
        found = detectors.find_local_file(detectors.DETECTORS['inception'], detector_dir)
    except detectors.DetectorError:     # a --detector-dir without the Inception file
        found = None
    return 'inception' if found else detectors.EFFNET


def prepare(detector: str, detector_dir=None) -> None:
    """Fail before any training when the detector cannot be found or imported."""
    from metrics import metric_main
    metric_main.prepare_detectors(['kid50k_full' + ('' if detector == 'inception' else metric_main.EFFNET_SUFFIX)],
                                  detector_dir=detector_dir, verbose=False)


def _options(G, data: str, device: str, detector_dir, seed: int) -> metric_utils.MetricOptions:
    dataset_kwargs = calc_metrics.dataset_kwargs_for(G, data, False, None)   # all reals, no x-flip
    G_kwargs = dict(fused_modconv=False) if device == 'cpu' else {}         # same math, much faster on the CPU
    return metric_utils.MetricOptions(G=G, G_kwargs=G_kwargs, dataset_kwargs=dataset_kwargs, device=torch.device(device),
                                      detector_dir=detector_dir, seed=seed)


def kid_fd(gen: metric_utils.FeatureStats, real: metric_utils.FeatureStats, seed: int) -> dict:
    """KID (unbiased MMD^2, cubic kernel, 100 subsets) and FD between two captured feature sets."""
    mu_g, sigma_g = gen.get_mean_cov()
    mu_r, sigma_r = real.get_mean_cov()
    kid = kid_unbiased(gen.get_all(), real.get_all(), num_subsets=100, max_subset_size=1000, rng=np.random.RandomState(seed))
    return dict(kid=kid, fd=frechet_distance(mu_g, sigma_g, mu_r, sigma_r))


def score_snapshot(pkl: str, data: str, detector: str, num_gen: int, device: str = 'cpu', detector_dir=None, seed: int = 0) -> dict:
    """{'kid', 'fd'} of the pickle's G_ema; the metric latents are seeded, so every snapshot sees the same z."""
    G = calc_metrics.load_network(pkl)['G_ema']
    opts = _options(G, data, device, detector_dir, seed)
    stats = dict(capture_all=True, capture_mean_cov=True)
    kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, detector, kwargs, max_items=None, **stats)
    gen = metric_utils.compute_feature_stats_for_generator(opts, detector, kwargs, max_items=num_gen, **stats)
    return kid_fd(gen, real, seed)

#----------------------------------------------------------------------------

"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs"):
exp(E_x KL(p(y|x) || p(y))), mean and std over splits of the generated set."""

from __future__ import annotations

import numpy as np
import scipy.special

from metrics import metric_utils

#----------------------------------------------------------------------------
# probs [N, classes] (rows sum to 1) -> (mean, std) of the score over num_splits parts.
# xlogy makes 0 * log 0 = 0, so one-hot rows are fine.

def inception_score(probs: np.ndarray, num_splits=10):
    probs = np.asarray(probs, np.float64)
    if len(probs) < num_splits:
        raise metric_utils.MetricInputError(f'IS needs at least {num_splits} generated images (one per split), got {len(probs)}')
    scores = []
    for i in range(num_splits):
        part = probs[i * len(probs) // num_splits : (i + 1) * len(probs) // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))

#----------------------------------------------------------------------------

def compute_is(opts, num_gen, num_splits, detector='inception'):
    detector_kwargs = dict(no_output_bias=True)     # softmax probabilities, no output bias
    stats = metric_utils.compute_feature_stats_for_generator(opts=opts, detector_name=detector,
        detector_kwargs=detector_kwargs, max_items=num_gen, capture_all=True)
    return inception_score(stats.get_all(), num_splits) if opts.rank == 0 else (float('nan'), float('nan'))

#----------------------------------------------------------------------------

"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall
metric for assessing generative models"): each set's manifold is the union of balls around
its points with radius = distance to the k-th nearest neighbour; precision is the share of
generated points inside the real manifold, recall the share of real points inside the
generated one. Features: VGG16 fc (upstream's vgg16.pt, return_features=True)."""

from __future__ import annotations

import torch

from metrics import metric_utils

#----------------------------------------------------------------------------
# Distances rows x cols in column batches; with several ranks each computes every N-th
# batch and the batches are gathered, so every rank gets the whole [R, C] matrix.

def pairwise_distances(rows: torch.Tensor, cols: torch.Tensor, col_batch_size=10000, num_gpus=1, rank=0) -> torch.Tensor:
    num_cols = cols.shape[0]
    rounds = -(-num_cols // (col_batch_size * num_gpus)) # ceil: batches per rank
    num_batches = rounds * num_gpus
    padded = torch.nn.functional.pad(cols, [0, 0, 0, -num_cols % num_batches])
    out = []
    for chunk in padded.chunk(num_batches)[rank::num_gpus]:
        dist = torch.cdist(rows.unsqueeze(0), chunk.unsqueeze(0))[0]
        if num_gpus > 1:
            parts = [torch.empty_like(dist) for _ in range(num_gpus)]
            torch.distributed.all_gather(parts, dist)
            out.extend(parts)
        else:
            out.append(dist)
    return torch.cat(out, dim=1)[:, :num_cols]

#----------------------------------------------------------------------------
# Radius of each manifold point: distance to its k-th nearest other point (the point
# itself is at distance 0, hence the k+1-th smallest).

def knn_radii(manifold: torch.Tensor, k: int, row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0) -> torch.Tensor:
    if manifold.shape[0] < k + 1:
        raise metric_utils.MetricInputError(f'precision/recall with k={k} needs at least {k + 1} images per set, got {manifold.shape[0]}')
    radii = []
    for batch in manifold.split(row_batch_size):
        dist = pairwise_distances(batch, manifold, col_batch_size, num_gpus, rank)
        radii.append(dist.to(torch.float32).kthvalue(k + 1, dim=1).values.to(manifold.dtype))
    return torch.cat(radii)

#----------------------------------------------------------------------------
# Share of probes that fall inside at least one manifold ball.

def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor,
                      row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0) -> float:
    inside = []
    for batch in probes.split(row_batch_size):
        dist = pairwise_distances(batch, manifold, col_batch_size, num_gpus, rank)
        inside.append((dist <= radii.unsqueeze(0)).any(dim=1))
    return float(torch.cat(inside).to(torch.float32).mean())


def precision_recall(real: torch.Tensor, gen: torch.Tensor, k=3, row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0):
    kw = dict(row_batch_size=row_batch_size, col_batch_size=col_batch_size, num_gpus=num_gpus, rank=rank)
    precision = manifold_coverage(real, knn_radii(real, k, **kw), gen, **kw)
    recall = manifold_coverage(gen, knn_radii(gen, k, **kw), real, **kw)
    return precision, recall

#----------------------------------------------------------------------------
# fp16 distances on CUDA like upstream; fp32 on the CPU, where half cdist is slow or missing.

def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size, detector='vgg16'):
    detector_kwargs = dict(return_features=True)
    dtype = torch.float16 if opts.device.type == 'cuda' else torch.float32
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=max_real, min_items=nhood_size + 1).get_all_torch().to(dtype).to(opts.device)
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_name=detector, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all_torch().to(dtype).to(opts.device)
    precision, recall = precision_recall(real, gen, nhood_size, row_batch_size, col_batch_size, opts.num_gpus, opts.rank)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return precision, recall

#----------------------------------------------------------------------------

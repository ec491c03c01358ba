"""Shared machinery of the metrics: options, feature statistics, feature extraction for the
dataset (cached on disk) and for the generator, and multi-GPU sharding.

Sharding follows upstream (docs/compatibility.md §5.1): rank r handles items r, r+N, r+2N, ...; after
every batch the features of all ranks are gathered, so every rank ends with identical stats
in item order.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
from typing import Optional

import numpy as np
import torch

import dnnlib
from metrics import detectors

#----------------------------------------------------------------------------
# Everything a metric needs to know about one evaluation.

class MetricOptions:
    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None,
                 progress=None, cache=True, detector_dir=None, detector_sha256=None, cache_dir=None,
                 seed=None, verbose=False):
        assert 0 <= rank < num_gpus, f'rank {rank} outside 0..{num_gpus - 1}'
        self.G              = G                         # Generator (G_ema), any device; copied to `device`.
        self.G_kwargs       = dict(G_kwargs)            # Extra kwargs for G(z, c, ...).
        self.dataset_kwargs = dict(dataset_kwargs)      # construct_class_by_name kwargs of the real set.
        self.num_gpus       = num_gpus                  # World size; each rank computes a share.
        self.rank           = rank
        self.device         = torch.device(device) if device is not None else torch.device('cuda', rank)
        self.progress       = progress                  # Callable(done, total) or None.
        self.cache          = cache                     # Use and write the dataset-statistics cache.
        self.detector_dir   = detector_dir              # Local folder with detector files, None = env/cache/download.
        self.detector_sha256 = dict(detector_sha256 or {})  # {'inception': hex, 'vgg16': hex} to enforce, else pinned.
        self.cache_dir      = cache_dir                 # Cache root, None = dnnlib's.
        self.seed           = seed                      # Seed for z and labels, None = unseeded like upstream.
        self.verbose        = verbose
        if self.device.type != 'cuda':
            self.G_kwargs.setdefault('force_fp32', True)   # fp16 layers are slow or unsupported off CUDA

    def detector(self, name: str) -> detectors.DetectorSpec:
        sha = self.detector_sha256.get(name)
        spec = detectors.DetectorSpec(name, self.detector_dir, self.cache_dir, sha, verbose=self.verbose and self.rank == 0)
        if self.num_gpus > 1 and name != detectors.EFFNET:
            # Rank 0 finds or downloads the file first; the others then find it in the cache.
            if self.rank != 0:
                torch.distributed.barrier()
            spec.path()
            if self.rank == 0:
                torch.distributed.barrier()
        return spec

class MetricInputError(ValueError):
    """The inputs cannot give the metric (e.g. too few images); the message says what is needed."""

#----------------------------------------------------------------------------
# Running statistics of detector features: all features and/or their sum and sum of outer
# products (float64), like upstream's FeatureStats so that cache files hold the same fields.

class FeatureStats:
    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        # Field names are the cache-file format; the buffers are sized by the first append().
        vars(self).update(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=max_items,
                          num_items=0, num_features=None, all_features=None, raw_mean=None, raw_cov=None)

    def set_num_features(self, num_features: int) -> None:
        if self.num_features is None:
            self.num_features, self.all_features = num_features, []
            self.raw_mean = np.zeros(num_features, np.float64)
            self.raw_cov = np.zeros((num_features, num_features), np.float64)
        assert num_features == self.num_features, f'feature size changed from {self.num_features} to {num_features}'

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2, f'features must be [N, F], got {x.shape}'
        if self.max_items is not None:
            room = self.max_items - self.num_items
            if room <= 0:
                return
            x = x[:room]
        self.set_num_features(x.shape[1])
        self.num_items += len(x)
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov: # float64 sums: fp32 would lose precision over 50k items
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        assert x.ndim == 2 and 0 <= rank < num_gpus
        self.append(gather_interleaved(x, num_gpus).cpu().numpy())

    def get_all(self) -> np.ndarray:
        assert self.capture_all
        return np.concatenate(self.all_features, axis=0) if self.all_features else np.zeros([0, self.num_features or 0], np.float32)

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        assert self.capture_mean_cov and self.num_items > 0
        n = self.num_items
        mean = self.raw_mean / n
        return mean, self.raw_cov / n - np.outer(mean, mean)

    def save(self, path: str) -> None:
        _atomic_write_bytes(path, pickle.dumps(dict(self.__dict__)))

    @staticmethod
    def load(path: str) -> 'FeatureStats':
        with open(path, 'rb') as f:
            state = _NumpyUnpickler(f).load()
        obj = FeatureStats()
        obj.__dict__.update(state)
        return obj

#----------------------------------------------------------------------------
# Cache files hold only numpy arrays and plain values; refuse anything else when reading.

class _NumpyUnpickler(pickle.Unpickler):
    _allowed = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', '_reconstruct'),
                ('numpy._core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
                ('numpy._core.multiarray', 'scalar'), ('builtins', 'set')}

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f'feature-stats cache: unexpected object {module}.{name}; delete the cache file')
        return super().find_class(module, name)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    dnnlib.util.atomic_write_bytes(path, data)

#----------------------------------------------------------------------------
# Multi-GPU: gather every rank's [n, F] batch so that row order is item order
# (rank r's row i is item i*N + r, matching the rank-strided item subsets).

def gather_interleaved(x: torch.Tensor, num_gpus: int) -> torch.Tensor:
    if num_gpus == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(num_gpus)]
    torch.distributed.all_gather(parts, x.contiguous())
    return interleave(parts)


def interleave(parts: list) -> torch.Tensor:
    """[x_0, ..., x_{N-1}] each [n, F] -> [n*N, F] with row i*N + r = x_r[i]."""
    return torch.stack(parts, dim=1).flatten(0, 1)


def rank_item_subset(num_items: int, num_gpus: int, rank: int) -> list:
    """Items this rank processes; wraps around so all ranks do the same number of batches."""
    return [(i * num_gpus + rank) % num_items for i in range((num_items - 1) // num_gpus + 1)]


def broadcast_flag(flag: bool, opts: MetricOptions) -> bool:
    if opts.num_gpus == 1:
        return flag
    t = torch.as_tensor(float(flag), dtype=torch.float32, device=opts.device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item() != 0)

#----------------------------------------------------------------------------
# Dataset-statistics cache key: a content hash of the dataset kwargs, a fingerprint of the
# data on disk (so a rebuilt dataset is never matched with stale stats), the detector
# weights, the detector kwargs and the stats options.

def dataset_fingerprint(path) -> str:
    if not isinstance(path, str) or not os.path.exists(path):
        return 'none'
    if os.path.isfile(path):
        st = os.stat(path)
        return f'file:{st.st_size}:{st.st_mtime_ns}'
    count = total = newest = 0
    for root, _dirs, files in os.walk(path):
        for fname in files:
            st = os.stat(os.path.join(root, fname))
            count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
    return f'dir:{count}:{total}:{newest}'


def stats_cache_key(dataset_kwargs: dict, detector_key: str, detector_kwargs: dict, stats_kwargs: dict) -> str:
    args = dict(dataset_kwargs=dataset_kwargs, data_fingerprint=dataset_fingerprint(dataset_kwargs.get('path')),
                detector=detector_key, detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    return hashlib.md5(repr(sorted(args.items())).encode('utf-8')).hexdigest()


def stats_cache_file(opts: MetricOptions, dataset_name: str, detector: detectors.DetectorSpec, md5: str) -> str:
    return os.path.join(detectors.cache_root(opts.cache_dir), 'gan-metrics', f'{dataset_name}-{detector.stem()}-{md5}.pkl')

#----------------------------------------------------------------------------

def construct_dataset(dataset_kwargs: dict):
    import dnnlib.util
    return dnnlib.util.construct_class_by_name(**dataset_kwargs)


def _loader_kwargs(device: torch.device) -> dict:
    # Upstream's loader settings on CUDA; in-process loading on the CPU (workers would only
    # compete for the same cores), and no prefetch_factor without workers (docs/compatibility.md §9).
    if device.type == 'cuda':
        return dict(pin_memory=True, num_workers=3, prefetch_factor=2)
    return dict(num_workers=0)


def _to_rgb(images: torch.Tensor) -> torch.Tensor:
    return images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images


def _report(opts: MetricOptions, what: str, done: int, total: Optional[int]) -> None:
    if opts.progress is not None:
        opts.progress(done, total)
    elif opts.verbose and opts.rank == 0:
        from dnnlib.progress import Progress
        lines = opts.__dict__.setdefault('progress_lines', {})  # one Progress (with its ETA) per phase
        if what not in lines or done < lines[what].done:
            lines[what] = Progress(what, total)
        lines[what].update(done)

#----------------------------------------------------------------------------
# Feature statistics of the real images; cached on disk by rank 0 (generator stats never are).

@torch.no_grad()
def compute_feature_stats_for_dataset(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                      batch_size=64, max_items=None, min_items=2, **stats_kwargs) -> FeatureStats:
    dataset = construct_dataset(opts.dataset_kwargs)
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    if num_items < min_items:
        raise MetricInputError(f'--data: the dataset has {len(dataset)} images but this metric needs at least {min_items}')
    detector = opts.detector(detector_name)
    cache_file = None
    if opts.cache:
        md5 = stats_cache_key(opts.dataset_kwargs, detector.key(), detector_kwargs, dict(stats_kwargs, max_items=max_items))
        cache_file = stats_cache_file(opts, dataset.name, detector, md5)
        if broadcast_flag(os.path.isfile(cache_file) if opts.rank == 0 else False, opts):
            return FeatureStats.load(cache_file)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    net = detector.load(opts.device)
    subset = rank_item_subset(num_items, opts.num_gpus, opts.rank)
    loader = torch.utils.data.DataLoader(dataset, sampler=subset, batch_size=batch_size, **_loader_kwargs(opts.device))
    for images, _labels in loader:
        features = net(_to_rgb(images).to(opts.device), **detector_kwargs)
        stats.append_torch(features, opts.num_gpus, opts.rank)
        _report(opts, 'dataset features', stats.num_items, num_items)

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats

#----------------------------------------------------------------------------
# Random latents and labels for the generator; seeded per rank when opts.seed is set.

class LatentSampler:
    def __init__(self, opts: MetricOptions, G, dataset=None):
        self.opts, self.G, self.dataset = opts, G, dataset
        self.gen = None
        self.rnd = np.random
        if opts.seed is not None:
            self.gen = torch.Generator().manual_seed(opts.seed * opts.num_gpus + opts.rank)
            self.rnd = np.random.RandomState(opts.seed * opts.num_gpus + opts.rank)

    def z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim], generator=self.gen).to(self.opts.device)

    def c(self, n: int) -> torch.Tensor:
        if self.G.c_dim == 0:
            return torch.zeros([n, 0], device=self.opts.device)
        labels = [self.dataset.get_label(self.rnd.randint(len(self.dataset))) for _ in range(n)]
        return torch.from_numpy(np.stack(labels)).to(self.opts.device)


def prepare_generator(opts: MetricOptions):
    G = copy.deepcopy(opts.G).to(opts.device)
    G.eval().requires_grad_(False)
    dataset = construct_dataset(opts.dataset_kwargs) if G.c_dim > 0 else None
    return G, LatentSampler(opts, G, dataset)

#----------------------------------------------------------------------------
# Feature statistics of generated images: batches of batch_gen through G, converted to uint8
# like upstream, up to batch_size per detector call, until max_items are gathered.

@torch.no_grad()
def compute_feature_stats_for_generator(opts: MetricOptions, detector_name: str, detector_kwargs: dict,
                                        batch_size=64, batch_gen=None, **stats_kwargs) -> FeatureStats:
    batch_gen = batch_gen or min(batch_size, 4)
    assert batch_size % batch_gen == 0, 'batch_size must be a multiple of batch_gen'
    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None, 'generator stats need max_items'
    batch_size = min(batch_size, -(-stats.max_items // batch_gen) * batch_gen)    # tiny sized metrics: no waste
    G, sampler = prepare_generator(opts)
    net = opts.detector(detector_name).load(opts.device)
    while not stats.is_full():
        images = []
        for _ in range(batch_size // batch_gen):
            img = G(sampler.z(batch_gen), sampler.c(batch_gen), **opts.G_kwargs)
            images.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))
        features = net(_to_rgb(torch.cat(images)), **detector_kwargs)
        stats.append_torch(features, opts.num_gpus, opts.rank)
        _report(opts, 'generator features', stats.num_items, stats.max_items)
    return stats

#----------------------------------------------------------------------------

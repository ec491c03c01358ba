"""Registry of the quality metrics, upstream's names and result format (docs/compatibility.md §6.1).

    result = calc_metric('fid50k_full', G=G_ema, dataset_kwargs=..., num_gpus=1, rank=0, device='cuda')
    report_metric(result, run_dir=run_dir, snapshot_pkl='network-snapshot-000100.pkl')

Besides upstream's fixed names, sized variants such as `fid1k_full`, `kid2k`, `pr1k3_full`,
`is5k` or `fid200_full` (raw count) are accepted for quick evaluations, and every name takes
the suffix `_effnet` for the offline EfficientNet-Lite0 features, whose results carry
`"comparable": false` and are NOT comparable to Inception-based numbers.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import time

import torch

import dnnlib
from metrics import detectors
from metrics import metric_utils
from metrics import frechet_inception_distance
from metrics import kernel_inception_distance
from metrics import precision_recall
from metrics import inception_score
from metrics import perceptual_path_length

EFFNET_SUFFIX = '_effnet'
NOT_COMPARABLE = 'EfficientNet-Lite0 features: NOT comparable to Inception-based FID/KID/IS or VGG-based PR/PPL'

_metric_dict: dict = {}  # name -> fn(opts) -> dict of results

#----------------------------------------------------------------------------
# Registry (same small shape as upstream's): the function name is the metric name.

def register_metric(fn):
    assert callable(fn)
    if fn.__name__ in _metric_dict:
        raise ValueError(f'Metric "{fn.__name__}" is registered twice')
    _metric_dict[fn.__name__] = fn
    return fn


def list_valid_metrics() -> list:
    return list(_metric_dict.keys())


def is_valid_metric(metric: str) -> bool:
    return metric in _metric_dict or _parse_sized(metric) is not None


def get_metric_fn(metric: str):
    """The function computing `metric`; an unknown name lists the valid ones and a close match."""
    if metric in _metric_dict:
        return _metric_dict[metric]
    fn = _parse_sized(metric)
    if fn is None:
        close = difflib.get_close_matches(metric, list_valid_metrics(), n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ''
        raise ValueError(f'Unknown metric "{metric}". Valid metrics: {", ".join(list_valid_metrics())} '
                         f'(or sized variants like fid1k_full, kid2k, pr1k3_full, is5k, fid200_full).{hint}')
    return fn


def is_comparable(metric: str) -> bool:
    return not metric.endswith(EFFNET_SUFFIX)

#----------------------------------------------------------------------------
# Fail fast: find or download every detector the metrics need before training or evaluating,
# so that an offline machine stops at startup with the fix, not at the first snapshot.

def prepare_detectors(metrics: list, detector_dir=None, cache_dir=None, verbose=True) -> dict:
    """{detector name: local path (None for the bundled effnet)}; raises DetectorError with the fix."""
    paths = {}
    for metric in metrics:
        name = get_metric_fn(metric).detector
        if name not in paths:
            spec = detectors.DetectorSpec(name, detector_dir=detector_dir, cache_dir=cache_dir, verbose=verbose)
            paths[name] = spec.path()
            if name == detectors.EFFNET:
                spec.key()      # raises ImportError naming the pip packages when they are missing
    return paths

#----------------------------------------------------------------------------
# Run one metric and return upstream's result dict; results are broadcast from rank 0.

def calc_metric(metric: str, **kwargs):
    """Compute `metric`.

    Args:
        metric: registered or sized metric name.
        **kwargs: MetricOptions fields: G, G_kwargs, dataset_kwargs, num_gpus, rank, device,
            progress, cache, detector_dir, detector_sha256, cache_dir, seed, verbose.
    Returns:
        EasyDict(results=EasyDict(key=value), metric, total_time, total_time_str, num_gpus),
        plus `detector`, `comparable` and `note` for the not-comparable `_effnet` metrics.
    """
    import dnnlib.util
    fn = get_metric_fn(metric)
    opts = metric_utils.MetricOptions(**kwargs)
    start = time.time()
    results = fn(opts)
    total_time = time.time() - start

    if opts.num_gpus > 1:
        for key, value in list(results.items()):
            t = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=t, src=0)
            results[key] = float(t.cpu())

    result = dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=metric, total_time=total_time,
                             total_time_str=dnnlib.util.format_time(total_time), num_gpus=opts.num_gpus)
    if not is_comparable(metric):
        result.update(detector=detectors.EFFNET, comparable=False, note=NOT_COMPARABLE)
    return result

#----------------------------------------------------------------------------
# Print one JSON line and append it to run_dir/metric-{name}.jsonl (one write per line).

def report_metric(result_dict, run_dir=None, snapshot_pkl=None) -> None:
    metric = result_dict['metric']
    assert is_valid_metric(metric), f'report_metric: unknown metric {metric}'
    # Snapshot path relative to the run folder when both are known (so the folder can move).
    if None not in (run_dir, snapshot_pkl) and os.path.exists(snapshot_pkl):
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    record = json.dumps({**result_dict, 'snapshot_pkl': snapshot_pkl, 'timestamp': time.time()})
    print(record)
    if run_dir is None or not os.path.isdir(run_dir):
        return
    dnnlib.util.append_line(os.path.join(run_dir, f'metric-{metric}.jsonl'), record)

#----------------------------------------------------------------------------
# Metric factories: every registered name and every sized variant is built from these.
# `full`: all reals with xflip off (max_size=None, xflip=False); else max_size=None only and
# at most `num_real` reals, the training-time xflip kept (upstream's legacy metrics).

def _real_set(opts, full: bool):
    if full:
        opts.dataset_kwargs.update(max_size=None, xflip=False)
    else:
        opts.dataset_kwargs.update(max_size=None)


def make_fid(name, num_gen, full, detector='inception', num_real=None):
    def fn(opts):
        _real_set(opts, full)
        max_real = None if full else (num_real or num_gen)
        return {name: frechet_inception_distance.compute_fid(opts, max_real=max_real, num_gen=num_gen, detector=detector)}
    fn.__name__ = name
    fn.detector = detector
    return fn


def make_kid(name, num_gen, full, detector='inception', num_real=None):
    def fn(opts):
        _real_set(opts, full)
        max_real = 1000000 if full else (num_real or num_gen)
        return {name: kernel_inception_distance.compute_kid(opts, max_real=max_real, num_gen=num_gen,
                                                            num_subsets=100, max_subset_size=1000, detector=detector)}
    fn.__name__ = name
    fn.detector = detector
    return fn


def make_pr(name, num_gen, k, full, detector='vgg16', num_real=None):
    def fn(opts):
        _real_set(opts, full)
        max_real = 200000 if full else (num_real or num_gen)
        p, r = precision_recall.compute_pr(opts, max_real=max_real, num_gen=num_gen, nhood_size=k,
                                           row_batch_size=10000, col_batch_size=10000, detector=detector)
        return {f'{name}_precision': p, f'{name}_recall': r}
    fn.__name__ = name
    fn.detector = detector
    return fn


def make_is(name, num_gen, detector='inception'):
    def fn(opts):
        _real_set(opts, True)
        mean, std = inception_score.compute_is(opts, num_gen=num_gen, num_splits=10, detector=detector)
        return {f'{name}_mean': mean, f'{name}_std': std}
    fn.__name__ = name
    fn.detector = detector
    return fn


def make_ppl(name, space, sampling, crop, num_samples=50000, detector='vgg16'):
    def fn(opts):
        ppl = perceptual_path_length.compute_ppl(opts, num_samples=num_samples, epsilon=1e-4, space=space,
                                                 sampling=sampling, crop=crop, batch_size=2, detector=detector)
        return {name: ppl}
    fn.__name__ = name
    fn.detector = detector
    return fn

#----------------------------------------------------------------------------
# Upstream's metrics (recommended, then legacy), each also as a not-comparable _effnet twin.

def _upstream_metrics(suffix='', fd='inception', pd='vgg16'):
    return [
        make_fid(f'fid50k_full{suffix}', 50000, True, fd),
        make_kid(f'kid50k_full{suffix}', 50000, True, fd),
        make_pr(f'pr50k3_full{suffix}', 50000, 3, True, pd),
        make_ppl(f'ppl2_wend{suffix}', 'w', 'end', False, detector=pd),
        make_is(f'is50k{suffix}', 50000, fd),
        make_fid(f'fid50k{suffix}', 50000, False, fd),
        make_kid(f'kid50k{suffix}', 50000, False, fd),
        make_pr(f'pr50k3{suffix}', 50000, 3, False, pd),
        make_ppl(f'ppl_zfull{suffix}', 'z', 'full', True, detector=pd),
        make_ppl(f'ppl_wfull{suffix}', 'w', 'full', True, detector=pd),
        make_ppl(f'ppl_zend{suffix}', 'z', 'end', True, detector=pd),
        make_ppl(f'ppl_wend{suffix}', 'w', 'end', True, detector=pd),
    ]

for _fn in _upstream_metrics() + _upstream_metrics(EFFNET_SUFFIX, detectors.EFFNET, detectors.EFFNET):
    register_metric(_fn)

#----------------------------------------------------------------------------
# Sized variants: fid{N}[k][_full], kid{N}[k][_full], is{N}[k], pr{N}k{K}[_full], each
# optionally with _effnet. N counts generated images (thousands with 'k').

_SIZED = re.compile(r'^(?:(fid|kid|is)(\d+)(k?)|pr(\d+)k(\d+))(_full)?(_effnet)?$')

def _parse_sized(metric: str):
    m = _SIZED.match(metric)
    if m is None:
        return None
    kind, num, kilo, pr_num, pr_k, full, effnet = m.groups()
    if kind == 'is' and full:
        return None
    fd, pd = (detectors.EFFNET, detectors.EFFNET) if effnet else ('inception', 'vgg16')
    if pr_num is not None:
        if int(pr_num) < 1 or int(pr_k) < 1:
            return None
        return make_pr(metric, int(pr_num) * 1000, int(pr_k), bool(full), pd)
    num_gen = int(num) * (1000 if kilo else 1)
    if num_gen < 2:
        return None
    if kind == 'fid':
        return make_fid(metric, num_gen, bool(full), fd)
    if kind == 'kid':
        return make_kid(metric, num_gen, bool(full), fd)
    return make_is(metric, num_gen, fd)

#----------------------------------------------------------------------------

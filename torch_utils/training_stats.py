"""Scalar statistics gathered during training, with upstream's names (report, report0, Collector).

`report(name, value)` records the moments (count, sum, sum of squares) of every scalar in a
tensor; a `Collector` turns everything reported since its last `update()` into num/mean/std,
combined over all ranks. Feedback between components does not go through here (STYLE §9.11):
this module is for logging only.
"""

from __future__ import annotations

import contextlib
import re
import threading

import numpy as np
import torch

from dnnlib.util import EasyDict as _Dict

_num_moments = 3                # [count, sum, sum of squares]
_lock = threading.Lock()
_rank = 0                       # This process's rank, set by init_multiprocessing().
_sync_device = None             # Device for the all-reduce, None = single process.
_moments = dict()               # name -> {device: float64 tensor [3]}, accumulated since the last collect.
_cumulative = dict()            # name -> float64 tensor [3], everything collected so far.
_order = dict()                 # name -> None, in first-report order (dicts keep insertion order).

#----------------------------------------------------------------------------
# Process setup: which rank we are and where the cross-rank reduction runs (cuda:rank for NCCL,
# the CPU for gloo). Call once per process before the first Collector.update().

def init_multiprocessing(rank: int, sync_device: torch.device | None) -> None:
    global _rank, _sync_device
    _rank = int(rank)
    _sync_device = torch.device(sync_device) if sync_device is not None else None

#----------------------------------------------------------------------------
# Record every element of `value` under `name`; returns `value` so it can be used inline.

def report(name: str, value):
    with _lock:
        _order.setdefault(name, None)
    if value is None:
        return value
    elems = torch.as_tensor(value).detach().flatten().to(torch.float64)
    if elems.numel() == 0:
        return value
    # Accumulated on the value's device: no host sync per report (it would stall a GPU every call).
    # NaN/Inf elements (a skipped step's loss) are left out: in the running totals they would turn
    # this statistic into NaN for every later tick. Skipped steps are counted on their own.
    finite = torch.isfinite(elems)
    elems = torch.where(finite, elems, 0.0)
    moments = torch.stack([finite.sum(dtype=torch.float64), elems.sum(), elems.square().sum()])
    with _lock:
        per_device = _moments.setdefault(name, {})
        if moments.device in per_device:
            per_device[moments.device].add_(moments)
        else:
            per_device[moments.device] = moments
    return value

#----------------------------------------------------------------------------
# Like report(), but only rank 0 records; for values that are identical on every rank.

def report0(name: str, value):
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------
# Moves what was reported since the last call into the cumulative totals, summed over ranks.
# Every rank must call it at the same time when running distributed (it is a collective).

def _distributed() -> bool:
    return _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def _sync(names: list) -> list:
    if _distributed():
        # A name reported on one rank only (a rare warning path) must not desynchronize the reduction.
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, names)
        names = list(dict.fromkeys(name for other in gathered for name in other))  # Same order on every rank.
        for name in names:
            _order.setdefault(name, None)
    with _lock:
        deltas = [sum((m.cpu() for m in _moments.pop(name, {}).values()), torch.zeros(_num_moments, dtype=torch.float64)) for name in names]
    if len(names) == 0:
        return names
    stacked = torch.stack(deltas)
    if _distributed():
        stacked = stacked.to(_sync_device)
        torch.distributed.all_reduce(stacked)
        stacked = stacked.cpu()
    for name, delta in zip(names, stacked):
        _cumulative[name] = _cumulative.get(name, torch.zeros(_num_moments, dtype=torch.float64)) + delta
    return names

#----------------------------------------------------------------------------
# Collects the statistics whose names match `regex` into num/mean/std per update interval.

class Collector:
    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous   # Keep a name's last values when nothing new was reported.
        self._base = dict()                   # name -> cumulative moments at the previous update.
        self._values = dict()                 # name -> moments of the last interval.
        self.update()
        self._values.clear()

    def names(self) -> list:
        return [name for name in _order if self._regex.fullmatch(name)]

    def update(self) -> None:
        if not self._keep_previous:
            self._values.clear()
        # Reduce every name, not just ours, so that all collectors and all ranks stay in step.
        names = [name for name in _sync(list(_order)) if self._regex.fullmatch(name)]
        for name in names:
            cumulative = _cumulative[name]
            delta = cumulative - self._base.get(name, torch.zeros(_num_moments, dtype=torch.float64))
            self._base[name] = cumulative.clone()
            if delta[0] != 0:
                self._values[name] = delta

    def num(self, name: str) -> int:
        return int(self._values[name][0]) if name in self._values else 0

    def mean(self, name: str) -> float:
        if self.num(name) == 0:
            return float('nan')
        moments = self._values[name]
        return float(moments[1] / moments[0])

    def std(self, name: str) -> float:
        if self.num(name) == 0 or not np.isfinite(self.mean(name)):
            return float('nan')
        moments = self._values[name]
        if self.num(name) == 1:
            return 0.0
        mean = float(moments[1] / moments[0])
        raw_var = float(moments[2] / moments[0])
        return float(np.sqrt(max(raw_var - mean ** 2, 0.0)))

    def as_dict(self) -> dict:
        stats = _Dict()
        for name in self.names():
            if name in self._values:
                stats[name] = _Dict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name: str) -> float:
        return self.mean(name)

#----------------------------------------------------------------------------
# Reports made inside are dropped: for probes that run the loss outside training (batch_gpu=auto).

@contextlib.contextmanager
def discarded():
    with _lock:
        saved = {name: {dev: m.clone() for dev, m in per_device.items()} for name, per_device in _moments.items()}
        order = dict(_order)
    try:
        yield
    finally:
        with _lock:
            _moments.clear()
            _moments.update(saved)
            _order.clear()
            _order.update(order)

#----------------------------------------------------------------------------
# Forget everything reported so far (tests and benchmarks that run several loops in one process).

def reset() -> None:
    with _lock:
        _moments.clear()
        _cumulative.clear()
        _order.clear()

#----------------------------------------------------------------------------

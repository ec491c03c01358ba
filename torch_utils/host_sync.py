"""Counts the places where Python reads a tensor's value: each one is a host synchronisation on a GPU.

A GPU run whose CPU thread waits for a value (`.item()`, `float(t)`, `bool(t)`, `.tolist()`,
`.cpu()`, `nonzero`, boolean-mask indexing, ...) drains the GPU's queue of launched kernels; so
does `torch.tensor(data, device=...)`, whose host-to-device copy is blocking. The
counter works without a GPU: it intercepts those calls on any device and records where in the
repository they came from, so a CPU run shows which reads a GPU run would wait on. Used by
`bench/train.py --profile` and by the tests that keep the training iteration free of them
(docs/benchmarks.md).

    with HostSyncCounter() as syncs:
        ...
    print(syncs.table())
"""

from __future__ import annotations

import collections
import os
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_THIS = os.path.abspath(__file__)

# Tensor methods that copy a value to Python or to host memory (seen as Python calls).
_READ_METHODS = {'tolist', 'numpy', 'cpu', '__array__'}
# Factories that copy Python data to a device with a blocking copy when given device=.
_COPY_FACTORIES = {'tensor', 'as_tensor'}
# Dispatcher ops whose result size or value the host must wait for.
_SYNC_OPS = {'_local_scalar_dense', 'equal', 'nonzero', 'nonzero_static', 'masked_select', 'unique', '_unique', '_unique2',
             'unique_dim', 'unique_consecutive', 'repeat_interleave', 'is_nonzero'}

#----------------------------------------------------------------------------
# The innermost frame that belongs to this repository (file:line function), or '<outside>'.

def _call_site() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path != _THIS and path.startswith(_REPO + os.sep) and '/.venv/' not in path:
            return f'{os.path.relpath(path, _REPO)}:{frame.f_lineno} {frame.f_code.co_name}'
        frame = frame.f_back
    return '<outside>'


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or []))


class _Methods(TorchFunctionMode):
    def __init__(self, record):
        super().__init__()
        self._record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        if name in _READ_METHODS:
            self._record(name)
        elif name in _COPY_FACTORIES and (kwargs or {}).get('device') is not None and args and not isinstance(args[0], torch.Tensor):
            self._record(f'{name}(data, device)')  # a blocking host-to-device copy: waits for the queue
        return func(*args, **(kwargs or {}))


class _Ops(TorchDispatchMode):
    def __init__(self, record):
        super().__init__()
        self._record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _SYNC_OPS:
            self._record(name)
        elif name in ('index', 'index_put', 'index_put_') and _has_bool_index(args):
            self._record(f'{name}[bool mask]')
        return func(*args, **(kwargs or {}))

#----------------------------------------------------------------------------

class HostSyncCounter:
    """Context manager: `counts` maps (what, call site) -> number of host reads while active."""

    def __init__(self):
        self.counts = collections.Counter()
        self._modes = []

    def _record(self, what: str) -> None:
        self.counts[(what, _call_site())] += 1

    def __enter__(self):
        self._modes = [_Methods(self._record), _Ops(self._record)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        self._modes = []
        return False

    def total(self) -> int:
        return sum(self.counts.values())

    def sites(self) -> set:
        return {site for _what, site in self.counts}

    def table(self, per: int = 1) -> str:
        """One line per call site, most frequent first; `per` divides the counts (e.g. by iterations)."""
        if not self.counts:
            return 'host syncs: none'
        lines = [f'host syncs: {self.total()} in all ({self.total() / per:.2f} per iteration)']
        for (what, site), count in self.counts.most_common():
            lines.append(f'  {count / per:8.2f}  {what:<20} {site}')
        return '\n'.join(lines)

#----------------------------------------------------------------------------

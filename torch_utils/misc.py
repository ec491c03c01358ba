"""Small PyTorch helpers with upstream StyleGAN2-ADA's names (network code, pickles and the
training loop call them by these names)."""

import contextlib
import functools
import itertools
import re
import warnings
from typing import Any, Iterator, Optional

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Cached constant tensors: avoids re-creating small tensors (filters, gains) on every call.

_constant_cache = dict()

def constant(value: Any, shape: Optional[tuple] = None, dtype: Optional[torch.dtype] = None,
             device: Optional[torch.device] = None, memory_format: Optional[torch.memory_format] = None) -> torch.Tensor:
    arr = np.asarray(value)
    shape = None if shape is None else tuple(shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device('cpu') if device is None else device
    memory_format = torch.contiguous_format if memory_format is None else memory_format
    # The key holds the raw bytes, so equal values share one tensor whatever object they came from.
    key = (arr.shape, arr.dtype, arr.tobytes(), shape, dtype, device, memory_format)
    if key not in _constant_cache:
        t = torch.as_tensor(arr.copy(), dtype=dtype, device=device)
        if shape is not None:
            t = t.expand(torch.broadcast_shapes(t.shape, shape))
        _constant_cache[key] = t.contiguous(memory_format=memory_format)
    return _constant_cache[key]

#----------------------------------------------------------------------------
# nan_to_num with upstream's signature (torch has had it natively since 1.8).

def nan_to_num(input: torch.Tensor, nan: float = 0.0, posinf: Optional[float] = None, neginf: Optional[float] = None, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf, out=out)

#----------------------------------------------------------------------------
# Silence the tracer's warnings about Python values derived from tensors (shape checks).

@contextlib.contextmanager
def suppress_tracer_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        yield

#----------------------------------------------------------------------------
# Shape check with None as a wildcard; works symbolically while tracing.

def assert_shape(tensor: torch.Tensor, ref_shape: list) -> None:
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'tensor has {tensor.ndim} dims, {len(ref_shape)} expected (shape {list(tensor.shape)} vs {ref_shape})')
    for dim, want in enumerate(ref_shape):
        have = tensor.shape[dim]
        if want is None:
            continue
        if isinstance(want, torch.Tensor) or isinstance(have, torch.Tensor): # symbolic while tracing
            with suppress_tracer_warnings():
                torch._assert(torch.equal(torch.as_tensor(have), torch.as_tensor(want)), f'size mismatch in dim {dim}')
        elif have != want:
            raise AssertionError(f'size {have} in dim {dim}, {want} expected (shape {list(tensor.shape)} vs {ref_shape})')

#----------------------------------------------------------------------------
# Decorator: show the function as a named range in the PyTorch profiler.

def profiled_function(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return wrapper

#----------------------------------------------------------------------------
# Endless sampler: one shuffle with RandomState(seed), then a sliding-window swap per step
# so that the order keeps changing without ever reshuffling the whole dataset.

class InfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0, window_size: float = 0.5):
        assert len(dataset) > 0, 'InfiniteSampler needs a non-empty dataset'
        assert num_replicas > 0 and 0 <= rank < num_replicas, 'rank must be in [0, num_replicas)'
        assert 0 <= window_size <= 1, 'window_size must be in [0, 1]'
        super().__init__()
        self.dataset, self.rank, self.num_replicas = dataset, rank, num_replicas
        self.shuffle, self.seed, self.window_size = shuffle, seed, window_size

    def __iter__(self) -> Iterator[int]:
        perm = np.arange(len(self.dataset))
        n = perm.size
        rng = np.random.RandomState(self.seed) if self.shuffle else None
        if rng is not None:
            rng.shuffle(perm)
        span = int(np.rint(n * self.window_size)) if rng is not None else 0
        # Step t visits slot t mod n (every rank walks the same global order and keeps its
        # share), then swaps that slot with one of the `span` slots just behind it.
        for step in itertools.count():
            pos = step % n
            if step % self.num_replicas == self.rank:
                yield perm[pos]
            if span > 1:
                other = (pos - rng.randint(span)) % n
                perm[[pos, other]] = perm[[other, pos]]

#----------------------------------------------------------------------------
# Parameters and buffers together (frozen D layers keep their weights in buffers).

def params_and_buffers(module: torch.nn.Module) -> list:
    assert isinstance(module, torch.nn.Module), 'params_and_buffers needs a torch.nn.Module'
    return [*module.parameters(), *module.buffers()]

def named_params_and_buffers(module: torch.nn.Module) -> list:
    assert isinstance(module, torch.nn.Module), 'named_params_and_buffers needs a torch.nn.Module'
    return [*module.named_parameters(), *module.named_buffers()]

def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False) -> None:
    """Copy tensors by dotted name; names absent from src are skipped unless require_all."""
    if not (isinstance(src_module, torch.nn.Module) and isinstance(dst_module, torch.nn.Module)):
        raise TypeError('copy_params_and_buffers: both arguments must be torch.nn.Module')
    source = dict(named_params_and_buffers(src_module))
    targets = named_params_and_buffers(dst_module)
    if require_all:
        missing = [name for name, _ in targets if name not in source]
        if missing:
            raise AssertionError(f'source network has no tensor named {missing[0]} ({len(missing)} missing in all)')
    with torch.no_grad():
        for name, dst in targets:
            if name in source:
                dst.copy_(source[name].detach())

#----------------------------------------------------------------------------
# Skip DDP's gradient all-reduce for accumulation rounds that are not the last.

@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    assert isinstance(module, torch.nn.Module), 'ddp_sync needs a torch.nn.Module'
    is_ddp = isinstance(module, torch.nn.parallel.DistributedDataParallel)
    with (module.no_sync() if (is_ddp and not sync) else contextlib.nullcontext()):
        yield

#----------------------------------------------------------------------------
# All ranks must hold identical parameters and buffers; catches silent divergence early.

def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    assert isinstance(module, torch.nn.Module), 'check_ddp_consistency needs a torch.nn.Module'
    prefix = type(module).__name__
    for name, tensor in named_params_and_buffers(module):
        label = f'{prefix}.{name}'
        if ignore_regex is not None and re.fullmatch(ignore_regex, label):
            continue
        mine = tensor.detach()
        mine = nan_to_num(mine) if mine.is_floating_point() else mine # NaN != NaN would always fail
        rank0 = mine.clone()
        torch.distributed.broadcast(tensor=rank0, src=0)
        if not torch.equal(mine, rank0):
            raise AssertionError(f'{label} differs between ranks')

#----------------------------------------------------------------------------
# Table of submodules with parameter/buffer counts and output shapes, from one forward pass.
# Each tensor is counted once, at the first (innermost) module whose call recorded it.

def _record_calls(module: torch.nn.Module, inputs: Any, max_nesting: int):
    calls, depth = [], [0]
    def enter(_mod, _inputs):
        depth[0] += 1
    def leave(mod, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
            calls.append(dnnlib.EasyDict(mod=mod, outputs=[t for t in outs if isinstance(t, torch.Tensor)]))
    handles = []
    for mod in module.modules():
        handles.append(mod.register_forward_pre_hook(enter))
        handles.append(mod.register_forward_hook(leave))
    try:
        result = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return result, calls

def _summary_rows(module, calls, skip_redundant):
    seen = set()
    def fresh(tensors):
        return [t for t in tensors if id(t) not in seen]
    names = {mod: name for name, mod in module.named_modules()}
    header = [type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']
    rows, totals = [header, ['---'] * 5], [0, 0]
    for call in calls:
        params, buffers, outs = fresh(call.mod.parameters()), fresh(call.mod.buffers()), fresh(call.outputs)
        seen.update(id(t) for t in params + buffers + outs)
        if skip_redundant and not (params or buffers or outs):
            continue
        n_par, n_buf = sum(t.numel() for t in params), sum(t.numel() for t in buffers)
        totals[0] += n_par
        totals[1] += n_buf
        base = '<top-level>' if call.mod is module else names[call.mod]
        shapes = [str(list(t.shape)) for t in call.outputs] or ['-']
        dtypes = [str(t.dtype).split('.')[-1] for t in call.outputs] or ['-']
        for k, (shape, dt) in enumerate(zip(shapes, dtypes)):
            label = base + (f':{k}' if len(call.outputs) > 1 else '')
            counts = [str(n_par) if n_par else '-', str(n_buf) if n_buf else '-'] if k == 0 else ['-', '-']
            rows.append([label, *counts, shape, dt])
    rows += [['---'] * 5, ['Total', str(totals[0]), str(totals[1]), '-', '-']]
    return rows

def print_module_summary(module: torch.nn.Module, inputs: Any, max_nesting: int = 3, skip_redundant: bool = True) -> Any:
    assert isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule), \
        'print_module_summary needs an eager torch.nn.Module'
    assert isinstance(inputs, (tuple, list)), 'inputs must be a list or tuple of positional arguments'
    result, calls = _record_calls(module, inputs, max_nesting)
    rows = _summary_rows(module, calls, skip_redundant)
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    print()
    for row in rows:
        print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)))
    print()
    return result

#----------------------------------------------------------------------------

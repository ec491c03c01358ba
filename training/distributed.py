"""torch.distributed helpers for the training loop: broadcast from rank 0, manual gradient all-reduce.

We do not use DDP: rank 0's module state is broadcast explicitly after construction and resume,
and gradients are averaged by hand, so ranks hold bit-identical parameters at every step
(docs/compatibility.md §5.1). Every collective goes through `_collective`, which turns a lost peer into one
clear error instead of a hang or a raw backend trace.
"""

from __future__ import annotations

import datetime
import os

import torch

#----------------------------------------------------------------------------
# Raised on every rank that notices another process failing or vanishing.

class DistributedError(RuntimeError):
    pass

#----------------------------------------------------------------------------

def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1

#----------------------------------------------------------------------------
# The CUDA device index of this process: under torchrun (RANK, WORLD_SIZE and LOCAL_RANK set) the
# node-local LOCAL_RANK, since the global rank exceeds the GPU count on every node but the first;
# with --gpus=N (all processes on one machine) the rank itself.

def local_device_index(rank: int, environ=None) -> int:
    environ = os.environ if environ is None else environ
    if all(key in environ for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')):
        return int(environ['LOCAL_RANK'])
    return rank

#----------------------------------------------------------------------------
# Process-group setup for one local process per GPU (file store) or torchrun (env://).
# `timeout_s` bounds how long a collective waits for a peer that stopped answering.

def init_distributed(rank: int, world_size: int, init_method: str, device: str = 'cpu', timeout_s: float = 600) -> None:
    if world_size <= 1:
        return
    backend = 'nccl' if device == 'cuda' else 'gloo'
    if backend == 'nccl':
        os.environ.setdefault('TORCH_NCCL_ASYNC_ERROR_HANDLING', '1')  # Turn NCCL timeouts into errors, not hangs.
        torch.cuda.set_device(local_device_index(rank))
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=timeout_s))

#----------------------------------------------------------------------------
# Runs one collective and converts backend failures into a DistributedError naming the operation.

def _collective(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, OSError) as e:
        raise DistributedError(f'rank {get_rank()}: {what} failed; another training process probably died or hung '
                               f'(see its log). Stopping. Backend said: {str(e).splitlines()[0] if str(e) else type(e).__name__}') from e

#----------------------------------------------------------------------------
# Copies rank 0's parameters and buffers into every rank's module, in place.

def broadcast_module(module: torch.nn.Module | None, src: int = 0) -> None:
    if module is None or not is_distributed():
        return
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.numel() == 0:
            continue
        _collective(f'broadcast of {name}', torch.distributed.broadcast, tensor.data, src=src)


def broadcast_buffers(module: torch.nn.Module | None, src: int = 0) -> None:
    if module is None or not is_distributed():
        return
    for name, tensor in module.named_buffers():
        if tensor.numel() > 0:
            _collective(f'broadcast of {name}', torch.distributed.broadcast, tensor.data, src=src)

#----------------------------------------------------------------------------
# Picklable plain data (plugin state, resume metadata) from rank 0 to all.

def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    holder = [obj if get_rank() == src else None]
    _collective('broadcast of an object', torch.distributed.broadcast_object_list, holder, src=src)
    return holder[0]

#----------------------------------------------------------------------------
# Averages the gradients of `params` over ranks in one flat all-reduce; a parameter without a
# gradient on this rank counts as zero so that every rank contributes the same layout.

def all_reduce_grads(params: list) -> None:
    if not is_distributed() or len(params) == 0:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    _collective('gradient all-reduce', torch.distributed.all_reduce, flat)
    flat /= get_world_size()
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()

#----------------------------------------------------------------------------
# True on every rank if `flag` is true on any rank (e.g. "this step saw a NaN").

def any_rank(flag: bool, device: torch.device) -> bool:
    if not is_distributed():
        return bool(flag)
    return any_rank_flag(torch.tensor([1.0 if flag else 0.0], device=device))


# Element-wise maximum over ranks of a flag tensor on the device, in place; no host sync.
def all_reduce_max(flag: torch.Tensor) -> None:
    _collective('flag all-reduce', torch.distributed.all_reduce, flag, op=torch.distributed.ReduceOp.MAX)


# The same for a [1] float32 flag tensor still on the device (reduced in place): one host sync in all.
def any_rank_flag(flag: torch.Tensor) -> bool:
    if is_distributed():
        all_reduce_max(flag)
    return bool(flag.item() > 0)

#----------------------------------------------------------------------------
# Names of parameters/buffers that differ between rank 0 and this rank (empty when in sync).

def find_drift(module: torch.nn.Module, ignore_regex: str = r'.*\.w_avg') -> list:
    import re
    if not is_distributed():
        return []
    drifted = []
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if re.fullmatch(ignore_regex, name):
            continue
        other = tensor.detach().clone()
        _collective(f'consistency check of {name}', torch.distributed.broadcast, other, src=0)
        if not torch.equal(torch.nan_to_num(other), torch.nan_to_num(tensor.detach())):
            drifted.append(name)
    return drifted


# Raises on any rank whose modules differ from rank 0's (run before every snapshot).
def check_in_sync(modules: dict) -> None:
    for label, module in modules.items():
        if module is None:
            continue
        drifted = find_drift(module)
        if drifted:
            raise DistributedError(f'rank {get_rank()}: {label} has drifted from rank 0 in {len(drifted)} tensors '
                                   f'(first: {drifted[0]}); this is a bug, please report it with the run\'s log.txt')


def barrier() -> None:
    if is_distributed():
        _collective('barrier', torch.distributed.barrier)

#----------------------------------------------------------------------------

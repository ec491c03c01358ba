"""Tensor and Parameter rebuilding for the restricted network-pickle loader (docs/crash-safety.md).

torch's own `_rebuild_tensor_v2` trusts the offset, size and stride in the file: an offset past the
end of the storage quietly grows it with uninitialised memory, and the stored backward hooks or
Parameter state are attached as given. These versions check every number against the storage and
accept only empty hooks and state, raising pickle.UnpicklingError otherwise.
"""

from __future__ import annotations

import math
import pickle

import torch

_MAX_DIMS = 16


class TensorDataError(pickle.UnpicklingError):
    pass


def _index_tuple(values, what: str) -> tuple:
    if type(values) not in (tuple, list, torch.Size) or len(values) > _MAX_DIMS:
        raise TensorDataError(f'tensor {what} is not a short tuple of integers')
    if not all(type(v) is int and v >= 0 for v in values):
        raise TensorDataError(f'tensor {what} {tuple(values)} holds negative or non-integer values')
    return tuple(values)


def _check_empty(value, what: str) -> None:
    if value is None:
        return
    if isinstance(value, (dict, tuple, list)) and all(not part for part in (value.values() if isinstance(value, dict) else value)):
        return
    raise TensorDataError(f'tensor {what} is not empty; network pickles never store {what}')


def check_view(storage_numel: int, offset, size, stride) -> None:
    """The view (offset, size, stride) must lie inside a storage of storage_numel elements and not exceed it."""
    if type(offset) is not int or offset < 0:
        raise TensorDataError(f'tensor storage offset {offset!r} is not a non-negative integer')
    size, stride = _index_tuple(size, 'size'), _index_tuple(stride, 'stride')
    if len(size) != len(stride):
        raise TensorDataError(f'tensor size {size} and stride {stride} differ in length')
    numel = math.prod(size)
    if numel == 0:
        if offset > storage_numel:
            raise TensorDataError(f'tensor storage offset {offset} is past the end of its storage ({storage_numel} elements)')
        return
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= storage_numel or numel > storage_numel:
        raise TensorDataError(f'tensor of size {size} at offset {offset} does not fit its storage ({storage_numel} elements)')


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise TensorDataError(f'tensor data is a {type(storage).__name__}, not a storage')
    check_view(storage._size(), storage_offset, size, stride)
    if type(requires_grad) is not bool:
        raise TensorDataError('tensor requires_grad is not a bool')
    _check_empty(backward_hooks, 'backward hooks')
    if metadata is not None and not (isinstance(metadata, dict) and all(type(v) is bool for v in metadata.values())):
        raise TensorDataError('tensor metadata is not a dict of flags')
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), requires_grad,
                                           None, metadata or None)


def rebuild_parameter(data, requires_grad, backward_hooks):
    return rebuild_parameter_with_state(data, requires_grad, backward_hooks, None)


def rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise TensorDataError('parameter data is not a tensor')
    _check_empty(backward_hooks, 'backward hooks')
    _check_empty(state, 'parameter state')
    return torch.nn.Parameter(data, requires_grad)

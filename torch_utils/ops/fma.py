"""Fused multiply-add ``a * b + c`` with broadcasting, differentiable to any order."""

from __future__ import annotations

import torch

#----------------------------------------------------------------------------

def fma(a, b, c):
    r"""Return ``a * b + c`` (one ``addcmul``), broadcasting all three.

    Gradients are summed back to each input's own shape, and the backward is built from
    differentiable ops, so higher-order gradients (path length regularization) work.
    """
    return _FusedMultiplyAdd.apply(a, b, c)

#----------------------------------------------------------------------------
# Reference (the specification).

def _fma_ref(a, b, c):
    return a * b + c

#----------------------------------------------------------------------------
# Sum a broadcast gradient back to `shape`: drop leading dims, then sum dims that were size 1.

def _unbroadcast(x, shape):
    shape = tuple(shape)
    extra = x.ndim - len(shape)
    if extra < 0:
        raise ValueError(f'fma: gradient of rank {x.ndim} cannot be reduced to shape {list(shape)}')
    if extra > 0:
        x = x.sum(list(range(extra)))
    dims = [i for i, size in enumerate(shape) if size == 1 and x.shape[i] != 1]
    if dims:
        x = x.sum(dims, keepdim=True)
    return x.reshape(shape)

#----------------------------------------------------------------------------

class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):  # pylint: disable=arguments-differ
        ctx.save_for_backward(a, b)
        ctx.c_shape = tuple(c.shape)
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        # d(a*b+c) = b da + a db + dc; each term is summed back to its input's shape.
        a, b = ctx.saved_tensors
        want_a, want_b, want_c = ctx.needs_input_grad[:3]
        return (_unbroadcast(grad * b, a.shape) if want_a else None,
                _unbroadcast(grad * a, b.shape) if want_b else None,
                _unbroadcast(grad, ctx.c_shape) if want_c else None)

#----------------------------------------------------------------------------

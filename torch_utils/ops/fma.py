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
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout):  # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, ctx.c_shape)
        return da, db, dc

#----------------------------------------------------------------------------

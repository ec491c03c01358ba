"""Fused bias + activation + gain + clamp, with an optional CUDA kernel.

Public surface as in StyleGAN2-ADA: ``bias_act(x, b, dim, act, alpha, gain, clamp, impl)`` and
the ``activation_funcs`` table (``networks.py`` reads ``activation_funcs[act].def_gain``).
``_bias_act_ref`` is the specification; the CUDA path must match it to float rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable

import torch

from .. import custom_ops

#----------------------------------------------------------------------------
# One row of the activation table. `ref` says which tensor upstream's gradient reads ('x' or 'y');
# `has_2nd_grad` says whether d2(act)/dx2 is non-zero, i.e. whether double backward must feed x/b.

@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    func:           Callable    # func(x, alpha=...) -> y, plain PyTorch.
    def_alpha:      float       # Default `alpha` (only lrelu uses it).
    def_gain:       float       # Default `gain`: sqrt(2) keeps the variance of He-initialized layers.
    cuda_idx:       int         # Activation id inside the CUDA kernel (see bias_act.h).
    ref:            str         # '', 'x' or 'y' (upstream meaning, kept for compatibility).
    has_2nd_grad:   bool        # True if the second derivative is non-zero.

    def __getitem__(self, key):  # Upstream's table is an EasyDict; keep dict-style reads working.
        return getattr(self, key)

#----------------------------------------------------------------------------
# Activation table: names, defaults and kernel ids as in upstream.

def _swish(x, **_):
    return torch.sigmoid(x) * x

activation_funcs = {
    'linear':   ActivationSpec(lambda x, **_: x,                                      0,   1,            1, '',  False),
    'relu':     ActivationSpec(lambda x, **_: torch.nn.functional.relu(x),            0,   math.sqrt(2), 2, 'y', False),
    'lrelu':    ActivationSpec(lambda x, alpha, **_: torch.nn.functional.leaky_relu(x, alpha), 0.2, math.sqrt(2), 3, 'y', False),
    'tanh':     ActivationSpec(lambda x, **_: torch.tanh(x),                          0,   1,            4, 'y', True),
    'sigmoid':  ActivationSpec(lambda x, **_: torch.sigmoid(x),                       0,   1,            5, 'y', True),
    'elu':      ActivationSpec(lambda x, **_: torch.nn.functional.elu(x),             0,   1,            6, 'y', True),
    'selu':     ActivationSpec(lambda x, **_: torch.nn.functional.selu(x),            0,   1,            7, 'y', True),
    'softplus': ActivationSpec(lambda x, **_: torch.nn.functional.softplus(x),        0,   1,            8, 'y', True),
    'swish':    ActivationSpec(_swish,                                                0,   math.sqrt(2), 9, 'x', True),
}

#----------------------------------------------------------------------------
# Resolve alpha/gain/clamp defaults and validate the activation name once.

def _resolve(act, alpha, gain, clamp):
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown act={act!r}; choose one of {sorted(activation_funcs)}')
    spec = activation_funcs[act]
    if clamp is not None and clamp < 0:
        raise ValueError(f'bias_act: clamp={clamp} must be None or >= 0')
    # -1 stands for "no clamp" (the kernel's convention).
    return (spec, float(spec.def_alpha if alpha is None else alpha), float(spec.def_gain if gain is None else gain),
            -1.0 if clamp is None else float(clamp))

#----------------------------------------------------------------------------

def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    r"""Fused bias, activation, gain and clamp: ``clamp(act(x + b) * gain, -clamp, clamp)``.

    Args:
        x:      Input tensor of any shape (fp16, fp32 or fp64).
        b:      Bias, 1-D of size ``x.shape[dim]`` and the same dtype as x, or None.
        dim:    Dimension of x that b runs along.
        act:    Activation name, a key of ``activation_funcs``.
        alpha:  Activation shape parameter (lrelu slope); None = the activation's default.
        gain:   Output scale; None = the activation's default (sqrt(2) for relu/lrelu/swish).
        clamp:  Clamp the output to [-clamp, +clamp]; None = no clamping.
        impl:   'cuda' (fused kernel when x is on a GPU and the plugin builds) or 'ref'.

    Returns:
        Tensor of the same shape, dtype and memory format as x. Differentiable twice.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"bias_act: impl={impl!r}; use 'cuda' or 'ref'")
    plugin = custom_ops.select_plugin('bias_act', impl, x, _load_plugin)
    if plugin is not None:
        # Make x dense outside the Function so a layout copy stays on the autograd graph.
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(_dense(x), b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

#----------------------------------------------------------------------------
# Reference implementation (the specification): plain PyTorch ops, differentiable to any order.

def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        if not (isinstance(b, torch.Tensor) and b.ndim == 1):
            raise ValueError('bias_act: b must be a 1-D tensor or None')
        if not (0 <= dim < x.ndim and b.shape[0] == x.shape[dim]):
            raise ValueError(f'bias_act: b has {b.shape[0]} entries but x.shape[{dim}] is '
                             f'{x.shape[dim] if 0 <= dim < x.ndim else "out of range"}')
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------
# Lazy plugin build: only called on the first CUDA tensor, never at import.

def _load_plugin():
    src = os.path.dirname(__file__)
    return custom_ops.get_plugin(
        module_name='bias_act_plugin',
        sources=['bias_act.cpp', 'bias_act.cu'],
        headers=['bias_act.h'],
        source_dir=src,
        # No --use_fast_math: it turns tanhf into the ~11-bit tanh.approx instruction, which breaks
        # tanh's gradient and clamp mask in fp32; the kernel is memory-bound, so it would buy nothing.
    )

#----------------------------------------------------------------------------
# Dense layout helpers: the kernel walks memory linearly, so every tensor it reads must share
# the strides of the tensor it writes like (contiguous or channels_last).

def _dense(x):
    if x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()

def _like(t, ref):
    if t.stride() == ref.stride():
        return t
    out = torch.empty_like(ref)
    out.copy_(t)
    return out

def _sum_except(t, dim):
    # The bias gradient sums many elements: accumulate in fp32 whatever t's dtype (fp64 stays fp64).
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.sum([i for i in range(t.ndim) if i != dim], dtype=acc).to(t.dtype)

#----------------------------------------------------------------------------
# CUDA autograd functions, built once per static configuration. Forward saves x only when the
# second derivative needs it and y only when the first derivative can be read from it
# (relu/lrelu sign, clamp mask), which keeps training memory as low as upstream's.

@functools.lru_cache(maxsize=None)
def _bias_act_cuda(dim=1, act='linear', alpha=None, gain=None, clamp=None):
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    save_x = spec.has_2nd_grad
    save_y = (not spec.has_2nd_grad) and (act != 'linear' or clamp >= 0)

    def run(mode, main, b, xref, yref, dy):
        plugin = custom_ops.cached_plugin('bias_act')
        return plugin.bias_act(mode, main, b, xref, yref, dy, dim, spec.cuda_idx, alpha, gain, clamp)

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # pylint: disable=arguments-differ
            if b is not None and not (b.ndim == 1 and 0 <= dim < x.ndim and b.shape[0] == x.shape[dim]):
                raise ValueError(f'bias_act: b must be 1-D with x.shape[{dim}] entries')
            empty = x.new_empty([0])
            b = b.contiguous() if b is not None else empty
            y = run(0, x, b, empty, empty, empty)
            ctx.save_for_backward(x if save_x else empty, b if save_x else empty, y if save_y else empty)
            return y

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            x, b, y = ctx.saved_tensors
            dx = BiasActCudaGrad.apply(dy, x, b, y)
            db = _sum_except(dx, dim) if ctx.needs_input_grad[1] else None
            return (dx if ctx.needs_input_grad[0] else None), db

    class BiasActCudaGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b, y):  # pylint: disable=arguments-differ
            ref = x if x.numel() else y
            dy = _like(dy, ref) if ref.numel() else _dense(dy)
            dx = run(1, dy, b, x, y, dy.new_empty([0]))
            ctx.save_for_backward(dy if spec.has_2nd_grad else dy.new_empty([0]), x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):  # pylint: disable=arguments-differ
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = run(2, _like(d_dx, x), b, x, y, dy)
                if ctx.needs_input_grad[2]:
                    d_b = _sum_except(d_x, dim)
            return d_dy, d_x, d_b, None

    return BiasActCuda

#----------------------------------------------------------------------------

"""Upsample, FIR-filter and downsample 2-D images in one op, with an optional CUDA kernel.

Public surface as in StyleGAN2-ADA: ``setup_filter``, ``upfirdn2d``, ``filter2d``, ``upsample2d``,
``downsample2d``; ``conv2d_resample`` also uses ``_get_filter_size``, ``_parse_scaling`` and
``_parse_padding``. ``_upfirdn2d_ref`` is the specification.
"""

from __future__ import annotations

import functools
import operator
import os

import numpy as np
import torch

from .. import custom_ops
from . import conv2d_gradfix

#----------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample: scaling is int or [x, y]; padding is int,
# [x, y] or [x0, x1, y0, y1] (negative values crop).

def _as_ints(value, what):
    # Accept Python and NumPy integers (augment.py computes pads with NumPy), reject the rest.
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        return [operator.index(v) for v in values]
    except TypeError:
        raise ValueError(f'upfirdn2d: {what}={value!r} must be integers') from None

def _parse_scaling(scaling):
    scaling = _as_ints(scaling, 'up/down')
    if len(scaling) == 1:
        scaling = scaling * 2
    if len(scaling) != 2 or min(scaling) < 1:
        raise ValueError(f'upfirdn2d: up/down={scaling!r} must be an int >= 1 or a pair of them')
    sx, sy = scaling
    return sx, sy

def _parse_padding(padding):
    padding = _as_ints(padding, 'padding')
    if len(padding) == 1:
        padding = padding * 2
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f'upfirdn2d: padding={padding!r} must have 1, 2 or 4 entries')
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1

def _get_filter_size(f):
    # Returns (width, height) as Python ints; None is the 1x1 impulse.
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError('upfirdn2d: f must be a 1-D or 2-D tensor (see setup_filter) or None')
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    return fw, fh

#----------------------------------------------------------------------------

def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    r"""Turn filter taps into the float32 tensor that upfirdn2d expects.

    Args:
        f:           Taps: None or a scalar (impulse), a 1-D list/array (separable), or 2-D.
        device:      Device of the result.
        normalize:   Scale the taps to sum to 1 (keeps the image's DC level).
        flip_filter: Flip the taps (correlation instead of convolution).
        gain:        Overall gain; each of the `ndim` passes gets gain**(1/ndim).
        separable:   Keep 1-D (two passes); None = automatic (1-D with >= 8 taps).

    Returns:
        float32 tensor of shape [fw] (separable) or [fh, fw].
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f'setup_filter: f must be a scalar, 1-D or 2-D and non-empty, got shape {list(f.shape)}')
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None: # two 1-D passes pay off only for long filters
        separable = f.ndim == 1 and f.numel() >= 8
    if not separable and f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError('setup_filter: a 2-D filter cannot be separable')
    per_pass_gain = gain ** (f.ndim / 2) # the gain is shared between the ndim passes
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return (f * per_pass_gain).to(device=device)

#----------------------------------------------------------------------------

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Upsample by zero insertion, pad, FIR-filter, and downsample by striding.

    1. Insert ``up - 1`` zeros after each pixel.
    2. Pad by ``padding`` (negative values crop).
    3. Convolve with f (correlate when ``flip_filter``), keeping the valid region; the filter is
       scaled by ``gain ** (f.ndim / 2)``.
    4. Keep every ``down``-th pixel.

    Args:
        x:           Image batch [N, C, H, W] (fp16, fp32 or fp64).
        f:           float32 filter [fh, fw] or [fw] (separable) without grad, or None (identity).
        up:          Upsampling factor, int or [x, y].
        down:        Downsampling factor, int or [x, y].
        padding:     int, [x, y] or [x0, x1, y0, y1], relative to the upsampled image.
        flip_filter: False = convolution, True = correlation.
        gain:        Overall signal gain.
        impl:        'cuda' (fused kernel for CUDA tensors when the plugin builds) or 'ref'.

    Returns:
        Tensor [N, C, H_out, W_out]; differentiable to any order with respect to x.
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('upfirdn2d: x must be a 4-D tensor [N, C, H, W]')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"upfirdn2d: impl={impl!r}; use 'cuda' or 'ref'")
    plugin = custom_ops.select_plugin('upfirdn2d', impl, x, _load_plugin)
    if plugin is not None:
        return _upfirdn2d_cuda(up=_parse_scaling(up), down=_parse_scaling(down), padding=_parse_padding(padding),
                               flip_filter=bool(flip_filter), gain=float(gain)).apply(x, f)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)

#----------------------------------------------------------------------------
# Reference implementation (the specification), built from pad/reshape/conv2d so that autograd
# gives every order of gradient.

def _check_filter(f, x):
    if f is None:
        return torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError('upfirdn2d: f must be a float32 tensor of rank 1 or 2; build it with setup_filter()')
    if f.requires_grad:
        raise ValueError('upfirdn2d: f must not require grad (there is no gradient for the filter)')
    return f

def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('upfirdn2d: x must be a 4-D tensor [N, C, H, W]')
    f = _check_filter(f, x)
    n, c, h, w = x.shape
    (upx, upy), (downx, downy) = _parse_scaling(up), _parse_scaling(down)

    # Zero insertion: each input pixel lands on the top-left corner of an up x up cell.
    if upx > 1 or upy > 1:
        grid = x.new_zeros([n, c, h * upy, w * upx])
        grid[:, :, ::upy, ::upx] = x
        x = grid

    # One constant pad; negative amounts crop.
    x = torch.nn.functional.pad(x, list(_parse_padding(padding)))

    # Depthwise FIR as grouped conv2d. conv2d correlates, so a true convolution needs flipped taps.
    taps = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    kernel = taps.expand(c, 1, *taps.shape).contiguous() # [C, 1, fh, fw] or [C, 1, fw]
    if taps.ndim == 2:
        x = conv2d_gradfix.conv2d(input=x, weight=kernel, groups=c)
    else: # separable: horizontal pass, then vertical
        x = conv2d_gradfix.conv2d(input=x, weight=kernel[:, :, None, :], groups=c)
        x = conv2d_gradfix.conv2d(input=x, weight=kernel[:, :, :, None], groups=c)

    # Decimation: keep every down-th row and column.
    return x[:, :, ::downy, ::downx]

#----------------------------------------------------------------------------
# Lazy plugin build: only called on the first CUDA tensor, never at import.

def _load_plugin():
    return custom_ops.get_plugin(
        module_name='upfirdn2d_plugin',
        sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
        headers=['upfirdn2d.h'],
        source_dir=os.path.dirname(__file__),
        extra_cuda_cflags=['--use_fast_math'],
    )

#----------------------------------------------------------------------------
# Padding of the backward op. The gradient of upfirdn2d is upfirdn2d of dy with up and down
# swapped and the filter flipped; these pads align it with x and make the output exactly x's size.

def _backward_padding(in_size, out_size, f_size, up, down, pad0):
    p0 = f_size - pad0 - 1
    p1 = in_size * up - out_size * down + pad0 - up + 1
    return p0, p1

#----------------------------------------------------------------------------
# CUDA autograd function, built once per static configuration; its backward is the same op with
# derived arguments, so every order of gradient is available.

@functools.lru_cache(maxsize=None)
def _upfirdn2d_cuda(up, down, padding, flip_filter, gain):
    upx, upy = up
    downx, downy = down
    padx0, padx1, pady0, pady1 = padding

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):  # pylint: disable=arguments-differ
            f = _check_filter(f, x)
            f2d = f if f.ndim == 2 else torch.outer(f, f)
            plugin = custom_ops.cached_plugin('upfirdn2d')
            y = plugin.upfirdn2d(x, f2d.contiguous(), upx, upy, downx, downy, padx0, padx1, pady0, pady1,
                                 flip_filter, gain)
            ctx.save_for_backward(f)
            ctx.in_hw = tuple(x.shape[2:])
            return y

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            (f,) = ctx.saved_tensors
            ih, iw = ctx.in_hw
            oh, ow = dy.shape[2:]
            fw, fh = _get_filter_size(f)
            px0, px1 = _backward_padding(iw, ow, fw, upx, downx, padx0)
            py0, py1 = _backward_padding(ih, oh, fh, upy, downy, pady0)
            dx = None
            if ctx.needs_input_grad[0]:
                op = _upfirdn2d_cuda(up=down, down=up, padding=(px0, px1, py0, py1),
                                     flip_filter=not flip_filter, gain=gain)
                dx = op.apply(dy, f)
            return dx, None

    return Upfirdn2dCuda

#----------------------------------------------------------------------------

def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Filter a batch of images with f, keeping their size (for the default padding=0).

    Args: as in ``upfirdn2d``; ``padding`` is added to the filter's own centering padding.
    Returns: Tensor [N, C, H_out, W_out].
    """
    fw, fh = _get_filter_size(f)
    centre = [fw // 2, (fw - 1) // 2, fh // 2, (fh - 1) // 2]
    return upfirdn2d(x, f, padding=_plus(padding, centre), flip_filter=flip_filter, gain=gain, impl=impl)

# User padding plus the padding that centres the filter, as [x0, x1, y0, y1].

def _plus(padding, extra):
    return [int(p) + e for p, e in zip(_parse_padding(padding), extra)]

#----------------------------------------------------------------------------

def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Upsample a batch of images by `up` with FIR filter f (gain is multiplied by up**2).

    Args: as in ``upfirdn2d``.
    Returns: Tensor [N, C, H * upy, W * upx] for the default padding=0.
    """
    sx, sy = _parse_scaling(up)
    fw, fh = _get_filter_size(f)
    centre = [(fw + sx - 1) // 2, (fw - sx) // 2, (fh + sy - 1) // 2, (fh - sy) // 2]
    return upfirdn2d(x, f, up=up, padding=_plus(padding, centre), flip_filter=flip_filter,
                     gain=gain * sx * sy, impl=impl) # zero insertion dilutes the signal by sx * sy

#----------------------------------------------------------------------------

def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Downsample a batch of images by `down` after filtering with FIR filter f.

    Args: as in ``upfirdn2d``.
    Returns: Tensor [N, C, H // downy, W // downx] for the default padding=0.
    """
    sx, sy = _parse_scaling(down)
    fw, fh = _get_filter_size(f)
    centre = [(fw - sx + 1) // 2, (fw - sx) // 2, (fh - sy + 1) // 2, (fh - sy) // 2]
    return upfirdn2d(x, f, down=down, padding=_plus(padding, centre), flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------

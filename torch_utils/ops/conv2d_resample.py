"""2-D convolution with optional FIR up/downsampling, as used by every StyleGAN2 layer.

Same signature, padding convention and evaluation order as upstream, so that results agree with
upstream to float rounding: 1x1 kernels resample on the cheaper side of the conv, upsampling uses
a strided transposed convolution followed by the FIR filter, and downsampling filters first and
then uses a strided convolution.
"""

from __future__ import annotations

import torch

from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _get_filter_size, _parse_padding

#----------------------------------------------------------------------------
# Weight shape as Python ints: (out_channels, in_channels_per_group, kh, kw).

def _get_weight_shape(w):
    return tuple(int(n) for n in w.shape)

#----------------------------------------------------------------------------
# Plain or transposed convolution. `flip_weight=True` correlates (torch's convention); False is a
# true convolution, so the kernel is flipped first (a no-op for 1x1 kernels).

def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    kh, kw = _get_weight_shape(w)[2:]
    if not flip_weight and kh * kw > 1:
        w = w.flip([2, 3])
    conv = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    return conv(x, w, stride=stride, padding=padding, groups=groups)

#----------------------------------------------------------------------------
# Padding after widening for the FIR filter, exactly as upsample2d/downsample2d widen it.

def _filter_padding(padding, filter_size, up, down):
    x0, x1, y0, y1 = padding
    fw, fh = filter_size
    if up > 1:
        x0, x1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2
        y0, y1 = y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    return [x0, x1, y0, y1]

#----------------------------------------------------------------------------
# conv_transpose2d wants [C_in, C_out // groups, kh, kw]; swap the channel axes within each group.

def _transpose_weight(w, groups):
    c_out, c_in_group, kh, kw = _get_weight_shape(w)
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, c_out // groups, c_in_group, kh, kw).transpose(1, 2)
    return w.reshape(groups * c_in_group, c_out // groups, kh, kw)

#----------------------------------------------------------------------------

def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    r"""2-D convolution with optional up/downsampling by an FIR filter.

    Padding is relative to the upsampled image and is applied once; the extra padding the filter
    needs is added here, as in ``upsample2d``/``downsample2d``.

    Args:
        x:           Input [N, C_in, H, W].
        w:           Weight [C_out, C_in // groups, kh, kw], same dtype as x.
        f:           float32 FIR filter from ``upfirdn2d.setup_filter``, or None (identity).
        up:          Integer upsampling factor >= 1.
        down:        Integer downsampling factor >= 1.
        padding:     int, [x, y] or [x0, x1, y0, y1] padding, relative to the upsampled image.
        groups:      Number of groups for a grouped convolution.
        flip_weight: True = correlation (torch conv2d); False = true convolution.
        flip_filter: False = convolve with f; True = correlate.

    Returns:
        Tensor [N, C_out, H_out, W_out].
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('conv2d_resample: x must be a 4-D tensor [N, C, H, W]')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError('conv2d_resample: w must be a 4-D tensor with the same dtype as x')
    if not (f is None or (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32)):
        raise ValueError('conv2d_resample: f must be None or a float32 1-D/2-D filter from setup_filter()')
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f'conv2d_resample: up={up!r} and down={down!r} must be ints >= 1')
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError(f'conv2d_resample: groups={groups!r} must be an int >= 1')
    _, _, kh, kw = _get_weight_shape(w)
    pad = _filter_padding(_parse_padding(padding), _get_filter_size(f), up, down)
    resample = dict(f=f, flip_filter=flip_filter)
    one_by_one = (kw == 1 and kh == 1)

    # 1x1 kernel, downsampling only: decimate first so the conv runs on fewer pixels.
    if one_by_one and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, down=down, padding=pad, **resample)
        return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: conv first, on the smaller image.
    if one_by_one and up > 1 and down == 1:
        x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x=x, up=up, padding=pad, gain=up ** 2, **resample)

    # Downsampling only: FIR with padding, then a strided conv does the decimation.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, padding=pad, **resample)
        return _conv2d_wrapper(x=x, w=w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling (then optional downsampling): a transposed conv with stride `up` inserts the
    # zeros and convolves in one op; the FIR filter then applies what is left of the padding.
    if up > 1:
        rest = [pad[0] - (kw - 1), pad[1] - (kw - up), pad[2] - (kh - 1), pad[3] - (kh - up)]
        shared_x = max(min(-rest[0], -rest[1]), 0)   # padding both sides can give back to the conv
        shared_y = max(min(-rest[2], -rest[3]), 0)
        x = _conv2d_wrapper(x=x, w=_transpose_weight(w, groups), stride=up, padding=[shared_y, shared_x],
                            groups=groups, transpose=True, flip_weight=(not flip_weight))
        rest = [rest[0] + shared_x, rest[1] + shared_x, rest[2] + shared_y, rest[3] + shared_y]
        x = upfirdn2d.upfirdn2d(x=x, padding=rest, gain=up ** 2, **resample)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x=x, down=down, **resample)
        return x

    # No resampling and symmetric non-negative padding: a single conv.
    if down == 1 and pad[0] == pad[1] and pad[2] == pad[3] and pad[0] >= 0 and pad[2] >= 0:
        return _conv2d_wrapper(x=x, w=w, padding=[pad[2], pad[0]], groups=groups, flip_weight=flip_weight)

    # General case (asymmetric or negative padding): explicit pad/crop, conv, then downsample.
    x = upfirdn2d.upfirdn2d(x=x, f=None, padding=pad, flip_filter=flip_filter)
    x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x=x, down=down, **resample)
    return x

#----------------------------------------------------------------------------

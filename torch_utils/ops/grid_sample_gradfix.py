"""Bilinear ``grid_sample`` that supports double backward (needed by R1 through AugmentPipe).

Native ``torch.nn.functional.grid_sample`` lacked a derivative for ``grid_sampler_2d_backward``
on many PyTorch versions (issues up to at least 2.5.1 on CUDA) and gained it later. Upstream
patched it through private aten ops; we instead probe, once per device type and on first use,
whether native double backward works. If it does the native op is used, otherwise
``_grid_sample_ref``: a plain-PyTorch bilinear sampler (gather + weights) that autograd can
differentiate to any order. Both compute bilinear, zeros padding, ``align_corners=False``.
"""

from __future__ import annotations

import torch

#----------------------------------------------------------------------------
# Upstream flag (the training loop sets it). Kept for compatibility: the double-backward-safe
# implementation is chosen whether or not it is set.

enabled = False

_native_ok = dict()  # device type -> bool: native double backward works there.

#----------------------------------------------------------------------------

def grid_sample(input, grid):  # pylint: disable=redefined-builtin
    r"""Bilinear sampling of ``input`` [N, C, H, W] at ``grid`` [N, Ho, Wo, 2] in [-1, 1].

    Zeros padding, ``align_corners=False`` (upstream's fixed settings). Returns [N, C, Ho, Wo];
    differentiable twice with respect to input (and grid).
    """
    if not (isinstance(input, torch.Tensor) and input.ndim == 4):
        raise ValueError('grid_sample: input must be a 4-D tensor [N, C, H, W]')
    if not (isinstance(grid, torch.Tensor) and grid.ndim == 4 and grid.shape[-1] == 2):
        raise ValueError('grid_sample: grid must be a tensor [N, H_out, W_out, 2]')
    needs_grad = torch.is_grad_enabled() and (input.requires_grad or grid.requires_grad)
    if not needs_grad or native_double_backward_ok(input.device):   # no graph (or inference mode): no probe
        return _grid_sample_native(input, grid)
    return _grid_sample_ref(input, grid)

#----------------------------------------------------------------------------

def _grid_sample_native(input, grid):  # pylint: disable=redefined-builtin
    return torch.nn.functional.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros',
                                           align_corners=False)

#----------------------------------------------------------------------------
# Probe: does d/d(input) of (d/d(input) of grid_sample) run on this device type? Runs once per
# device type on a 1x1x4x4 image; any RuntimeError (derivative not implemented) means no.

def native_double_backward_ok(device) -> bool:
    key = torch.device(device).type
    if key not in _native_ok:
        _native_ok[key] = _probe_native(torch.device(device))
    return _native_ok[key]

def _probe_native(device):
    try:
        with torch.enable_grad():
            x = torch.linspace(0, 1, 16, device=device).reshape(1, 1, 4, 4).requires_grad_(True)
            grid = torch.linspace(-0.9, 0.7, 18, device=device).reshape(1, 3, 3, 2).requires_grad_(True)
            y = _grid_sample_native(x, grid)
            (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
            (ggx,) = torch.autograd.grad(gx.square().sum(), [x])
        return bool(torch.isfinite(ggx).all())
    except (RuntimeError, NotImplementedError):
        return False

#----------------------------------------------------------------------------
# Reference (the specification): bilinear interpolation of the four neighbours with zero weight
# outside the image. Pixel centers sit at (i + 0.5) / size * 2 - 1 (align_corners=False).

def _grid_sample_ref(input, grid):  # pylint: disable=redefined-builtin
    batch_size, num_channels, in_h, in_w = input.shape
    _, out_h, out_w, _ = grid.shape
    grid = grid.to(input.dtype)
    ix = ((grid[..., 0] + 1) * in_w - 1) / 2   # [N, Ho, Wo], pixel units
    iy = ((grid[..., 1] + 1) * in_h - 1) / 2
    x0 = ix.detach().floor()
    y0 = iy.detach().floor()
    wx1 = ix - x0
    wy1 = iy - y0
    flat = input.reshape(batch_size, num_channels, in_h * in_w)
    out = 0
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            xi = x0 + dx
            yi = y0 + dy
            inside = (xi >= 0) & (xi <= in_w - 1) & (yi >= 0) & (yi <= in_h - 1)
            idx = (yi.clamp(0, in_h - 1) * in_w + xi.clamp(0, in_w - 1)).long().reshape(batch_size, 1, -1)
            vals = flat.gather(2, idx.expand(batch_size, num_channels, -1))
            weight = (wx * wy * inside.to(input.dtype)).reshape(batch_size, 1, -1)
            out = out + vals * weight
    return out.reshape(batch_size, num_channels, out_h, out_w)

#----------------------------------------------------------------------------

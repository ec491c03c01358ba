"""Optional CBAM attention inside D for ASA (docs/asa.md §4; Woo et al., ECCV 2018).

The block is applied to the output feature map of one discriminator block without changing D's
class, parameters or pickles. Why a process-wide forward hook filtered by module identity instead
of ``block.register_forward_hook`` or a wrapper module:

- a hook registered on the block is stored in ``block._forward_hooks`` and therefore travels with
  every ``copy.deepcopy(D)`` and pickle, so snapshots would reference our classes and upstream's
  loader could not open them; removing and restoring it around every snapshot would need the
  training loop's cooperation at exactly the right moment;
- a wrapper module changes the parameter names (``b32.conv0.weight`` -> ``b32.block.conv0.weight``).

The global hook lives outside D: copies and pickles of D see the plain upstream network, the
hook fires only for the one block object it was installed on, and ``remove()`` detaches it.
CBAM's parameters are trained through ``extra_parameters('D')`` and saved in the plugin state.
"""

from __future__ import annotations

import weakref

import torch

#----------------------------------------------------------------------------
# Convolutional Block Attention Module: F' = M_c(F) * F, F'' = M_s(F') * F'.

class CBAM(torch.nn.Module):
    def __init__(self,
        channels:    int,           # Feature channels of the attended map.
        reduction:   int = 16,      # Hidden width of the channel MLP is channels // reduction (CBAM default).
        kernel_size: int = 7,       # Spatial attention kernel (CBAM default).
    ):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel_mlp = torch.nn.Sequential(
            torch.nn.Linear(channels, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, channels))
        self.spatial = torch.nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)                                         # fp16 blocks: attend in fp32.
        ch = self.channel_mlp(x.mean(dim=[2, 3])) + self.channel_mlp(x.amax(dim=[2, 3]))
        x = x * torch.sigmoid(ch)[:, :, None, None]
        sp = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        x = x * torch.sigmoid(self.spatial(sp))
        return x.to(dtype)

#----------------------------------------------------------------------------
# Install `cbam` on the first output of `block` (DiscriminatorBlock returns (x, img)). Returns a
# handle with remove(). Weak references keep the hook from holding D or CBAM alive.

def attach_cbam(block: torch.nn.Module, cbam: CBAM):
    block_ref = weakref.ref(block)
    cbam_ref = weakref.ref(cbam)

    def hook(module, args, output):
        if module is not block_ref():
            return None
        attn = cbam_ref()
        if attn is None:
            return None
        if isinstance(output, tuple):
            return (attn(output[0]),) + tuple(output[1:])
        return attn(output)

    return torch.nn.modules.module.register_module_forward_hook(hook)

#----------------------------------------------------------------------------

"""Drop-in conv2d / conv_transpose2d with upstream's module flags, on native PyTorch ops.

Upstream replaced the convolution backward with a custom autograd function so that R1 and path
length regularization could (a) differentiate twice and (b) skip the weight gradient inside their
inner ``autograd.grad``. Native PyTorch now does both: convolution supports double backward, and
``torch.autograd.grad(outputs, inputs=[x])`` computes only the gradients on a path to ``inputs``
(the engine passes an output mask to ``convolution_backward``), so the weight-gradient kernel is
already skipped there. The flags and the context manager are kept so that upstream callers work;
no private aten ops are used.
"""

from __future__ import annotations

import contextlib

import torch

#----------------------------------------------------------------------------
# Module flags read by upstream code. `enabled` is set by the training loop; with native ops it
# changes nothing. `weight_gradients_disabled` is True inside no_weight_gradients().

enabled = False
weight_gradients_disabled = False

#----------------------------------------------------------------------------

@contextlib.contextmanager
def no_weight_gradients(disable=True):
    r"""Mark a region (R1/path-length ``autograd.grad``) where weight gradients are not needed.

    With native convolutions the autograd engine already skips the weight gradient when it is
    not requested, so this only sets ``weight_gradients_disabled`` for callers that read it.
    Nests correctly and restores the previous value on exit.
    """
    global weight_gradients_disabled  # pylint: disable=global-statement
    outer = weight_gradients_disabled
    weight_gradients_disabled = outer or bool(disable)
    try:
        yield
    finally:
        weight_gradients_disabled = outer

#----------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # pylint: disable=redefined-builtin
    r"""Same as ``torch.nn.functional.conv2d``; differentiable to any order."""
    return torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)

#----------------------------------------------------------------------------

def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # pylint: disable=redefined-builtin
                     dilation=1):
    r"""Same as ``torch.nn.functional.conv_transpose2d``; differentiable to any order."""
    return torch.nn.functional.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)

#----------------------------------------------------------------------------

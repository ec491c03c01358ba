"""The tolerance rule for fused ops, shared by tests/test_ops_cuda.py (real GPU kernels) and
tests/test_ops_emulated.py (the same kernel bodies compiled for the CPU).

Rule (flash-attention style): on every output -- forward value, input gradients and an R1-style
second-order gradient -- the fused result's error against the fp64 reference may be at most K times
the error of the reference op run in the same low precision, plus a small floor relative to the
result's magnitude (rounding-order and intrinsic differences in fp32).
"""

import torch

K = 2.0
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3}     # relative to the fp64 result's max magnitude

#----------------------------------------------------------------------------
# Forward value, input gradient(s) and an R1-style second-order gradient of `fn` at `inputs`.
# Output order: [y, d(inputs)..., d2(inputs)...].

def value_grad_grad(fn, inputs, seed=0):
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    g = torch.Generator(device=y.device).manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * dy).sum(), inputs, create_graph=True)
    penalty = sum(gr.double().square().sum() for gr in grads)
    grads2 = torch.autograd.grad(penalty, inputs, allow_unused=True) if penalty.requires_grad else [None] * len(inputs)
    grads2 = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(inputs, grads2)]
    return [y.detach()] + [gr.detach() for gr in grads] + list(grads2)

#----------------------------------------------------------------------------

def close_to_gold_failures(fused, lowp_ref, gold, dtype):
    r"""One message per output that breaks the rule (empty list = all within tolerance)."""
    failures = []
    for i, (a, r, g) in enumerate(zip(fused, lowp_ref, gold)):
        g = g.double()
        scale = g.abs().max().item() + 1e-12
        err = (a.double() - g).abs().max().item()
        base = (r.double() - g).abs().max().item()
        if not err <= K * base + FLOOR[dtype] * scale:
            failures.append(f'output {i}: fused error {err:.3g} > {K} x reference error {base:.3g} (scale {scale:.3g})')
    return failures

def compare(fn_impl, inputs, dtype, what):
    r"""Assert the rule for the fused op ``fn_impl('cuda', *inputs)`` against ``fn_impl('ref', *inputs)``.

    Gold is the fp64 reference on the same (rounded) inputs, so only the arithmetic's error counts.
    """
    gold = value_grad_grad(lambda *a: fn_impl('ref', *a), [t.to(dtype).double() for t in inputs])
    lowp = value_grad_grad(lambda *a: fn_impl('ref', *a), [t.to(dtype) for t in inputs])
    fused = value_grad_grad(lambda *a: fn_impl('cuda', *a), [t.to(dtype) for t in inputs])
    failures = close_to_gold_failures(fused, lowp, gold, dtype)
    assert not failures, f'{what}: ' + '; '.join(failures)

#----------------------------------------------------------------------------

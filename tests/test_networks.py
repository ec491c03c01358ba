"""Generator/Discriminator: upstream parameter and buffer names, shapes and order (docs/compatibility.md §3),
architectures, fp16, Freeze-D, truncation, noise modes and the D feature API."""

import pytest
import torch

from training import networks

#----------------------------------------------------------------------------
# Tiny configs (CPU-sized) used throughout.

def tiny_G(c_dim=0, architecture='skip', res=16, **synthesis_kwargs):
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture=architecture, **synthesis_kwargs))

def tiny_D(c_dim=0, architecture='resnet', res=16, **kwargs):
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, architecture=architecture,
        channel_base=128, channel_max=16, **kwargs)

def shapes(named):
    return [(name, tuple(t.shape)) for name, t in named]

#----------------------------------------------------------------------------
# The exact 64 px --cfg=auto config from docs/compatibility.md §3 (names and shapes only, no forward).

def _expected_G64_params():
    out = [('synthesis.b4.const', (512, 4, 4))]
    def layer(prefix, o, i, w=512):
        return [(f'{prefix}.weight', (o, i, 3, 3)), (f'{prefix}.noise_strength', ()), (f'{prefix}.bias', (o,)),
                (f'{prefix}.affine.weight', (i, w)), (f'{prefix}.affine.bias', (i,))]
    def torgb(prefix, i, w=512):
        return [(f'{prefix}.weight', (3, i, 1, 1)), (f'{prefix}.bias', (3,)), (f'{prefix}.affine.weight', (i, w)), (f'{prefix}.affine.bias', (i,))]
    out += layer('synthesis.b4.conv1', 512, 512) + torgb('synthesis.b4.torgb', 512)
    for r in (8, 16, 32):
        out += layer(f'synthesis.b{r}.conv0', 512, 512) + layer(f'synthesis.b{r}.conv1', 512, 512) + torgb(f'synthesis.b{r}.torgb', 512)
    out += layer('synthesis.b64.conv0', 256, 512) + layer('synthesis.b64.conv1', 256, 256) + torgb('synthesis.b64.torgb', 256)
    out += [('mapping.fc0.weight', (512, 512)), ('mapping.fc0.bias', (512,)), ('mapping.fc1.weight', (512, 512)), ('mapping.fc1.bias', (512,))]
    return out

def _expected_D64_params():
    out = [('b64.fromrgb.weight', (256, 3, 1, 1)), ('b64.fromrgb.bias', (256,)), ('b64.conv0.weight', (256, 256, 3, 3)), ('b64.conv0.bias', (256,)),
           ('b64.conv1.weight', (512, 256, 3, 3)), ('b64.conv1.bias', (512,)), ('b64.skip.weight', (512, 256, 1, 1))]
    for r in (32, 16, 8):
        out += [(f'b{r}.conv0.weight', (512, 512, 3, 3)), (f'b{r}.conv0.bias', (512,)), (f'b{r}.conv1.weight', (512, 512, 3, 3)),
                (f'b{r}.conv1.bias', (512,)), (f'b{r}.skip.weight', (512, 512, 1, 1))]
    out += [('b4.conv.weight', (512, 513, 3, 3)), ('b4.conv.bias', (512,)), ('b4.fc.weight', (512, 8192)), ('b4.fc.bias', (512,)),
            ('b4.out.weight', (1, 512)), ('b4.out.bias', (1,))]
    return out

def test_exact_spec_64px_auto_names_and_shapes():
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))
    D = networks.Discriminator(c_dim=0, img_resolution=64, img_channels=3, channel_base=16384, channel_max=512,
        num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4))
    assert G.num_ws == 10
    assert shapes(G.named_parameters()) == _expected_G64_params()
    G_buffers = dict(shapes(G.named_buffers()))
    assert G_buffers['mapping.w_avg'] == (512,)
    assert G_buffers['synthesis.b4.conv1.noise_const'] == (4, 4) and 'synthesis.b4.conv0.noise_const' not in G_buffers
    assert G_buffers['synthesis.b64.conv0.noise_const'] == (64, 64)
    assert sum(name.endswith('resample_filter') for name in G_buffers) == 5 + 9
    assert [G.synthesis.__getattr__(f'b{r}').use_fp16 for r in (4, 8, 16, 32, 64)] == [False, True, True, True, True]

    assert shapes(D.named_parameters()) == _expected_D64_params()
    D_buffers = [name for name, _ in D.named_buffers()]
    assert all(name.endswith('resample_filter') for name in D_buffers)
    assert len(D_buffers) == 4 + 4 * 4 - 3 + 1 # blocks, their layers (fromrgb only in b64), b4.conv
    assert [D.__getattr__(f'b{r}').num_layers for r in (64, 32, 16, 8)] == [4, 3, 3, 3]

def test_stylegan2_config_widths():
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
        synthesis_kwargs=dict(channel_base=32768, channel_max=512))
    names = dict(shapes(G.named_parameters()))
    assert names['synthesis.b64.conv1.weight'] == (512, 512, 3, 3)
    assert [f'mapping.fc{i}.weight' in names for i in range(9)] == [True] * 8 + [False]

#----------------------------------------------------------------------------
# Conditional networks: label embedding in G, label mapping and projection in D.

def test_conditional_G_and_D_shapes():
    G = tiny_G(c_dim=5)
    names = dict(shapes(G.named_parameters()))
    assert names['mapping.embed.weight'] == (16, 5) and names['mapping.fc0.weight'] == (16, 32)
    D = tiny_D(c_dim=5)
    names = dict(shapes(D.named_parameters()))
    assert names['mapping.embed.weight'] == (16, 5) and names['b4.out.weight'] == (16, 16)
    assert [f'mapping.fc{i}.weight' in names for i in range(9)] == [True] * 8 + [False]
    assert 'mapping.w_avg' not in dict(D.named_buffers())
    img = G(torch.randn(2, 16), torch.eye(5)[:2])
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32
    assert D(img, torch.eye(5)[:2]).shape == (2, 1)

def test_resnet_and_orig_G():
    G = tiny_G(architecture='resnet', res=32)
    names = [n for n, _ in G.named_parameters()]
    assert [f'synthesis.b{r}.skip.weight' in names for r in (4, 8, 16, 32)] == [False, True, True, True]
    assert [any(n.startswith(f'synthesis.b{r}.torgb') for n in names) for r in (4, 8, 16, 32)] == [False, False, False, True]
    assert G.num_ws == 2 * 5 - 2
    G_orig = tiny_G(architecture='orig', res=32)
    assert not any('skip' in n for n, _ in G_orig.named_parameters())
    assert G_orig.num_ws == G.num_ws
    assert G(torch.randn(2, 16), None).shape == (2, 3, 32, 32)

def test_orig_and_skip_D():
    D_orig = tiny_D(architecture='orig', res=32)
    names = [n for n, _ in D_orig.named_parameters()]
    assert not any('skip' in n for n in names)
    assert [n for n in names if 'fromrgb' in n] == ['b32.fromrgb.weight', 'b32.fromrgb.bias']
    D_skip = tiny_D(architecture='skip', res=32)
    names = [n for n, _ in D_skip.named_parameters()]
    assert [f'b{r}.fromrgb.weight' in names for r in (32, 16, 8, 4)] == [True] * 4
    img = torch.randn(4, 3, 32, 32)
    assert D_orig(img, None).shape == D_skip(img, None).shape == (4, 1)

#----------------------------------------------------------------------------
# fp16 blocks: the top num_fp16_res resolutions run in fp16 unless force_fp32; images stay fp32.

def test_fp16_blocks_and_force_fp32():
    G = tiny_G(res=32, num_fp16_res=2, conv_clamp=256).eval()
    assert [getattr(G.synthesis, f'b{r}').use_fp16 for r in (4, 8, 16, 32)] == [False, False, True, True]
    ws = G.mapping(torch.randn(2, 16), None)
    block_ws = ws[:, :3]
    x, img = G.synthesis.b4(None, None, block_ws[:, :2])
    x16, img16 = G.synthesis.b8(x, img, ws[:, 1:4])
    assert x.dtype == torch.float32
    x16, img16 = G.synthesis.b16(x16, img16, ws[:, 3:6])
    assert x16.dtype == torch.float16 and img16.dtype == torch.float32
    out16 = G.synthesis(ws, noise_mode='const')
    out32 = G.synthesis(ws, noise_mode='const', force_fp32=True)
    assert out16.dtype == out32.dtype == torch.float32
    assert (out16 - out32).abs().max() < 0.1 * out32.abs().max() + 0.05 # Same image up to fp16 rounding.
    D = tiny_D(res=32, num_fp16_res=2, conv_clamp=256)
    assert [getattr(D, f'b{r}').use_fp16 for r in (32, 16, 8)] == [True, True, False]
    assert D(out32, None).dtype == torch.float32

#----------------------------------------------------------------------------
# Freeze-D: layers with index < freeze_layers hold weight/bias as buffers under the same names.

def test_freeze_layers_moves_weights_to_buffers():
    D = tiny_D(res=32)
    D_frozen = tiny_D(res=32, block_kwargs=dict(freeze_layers=4))
    all_names = lambda m: sorted(n for n, _ in list(m.named_parameters()) + list(m.named_buffers()))
    assert all_names(D) == all_names(D_frozen)
    params = [n for n, _ in D_frozen.named_parameters()]
    buffers = [n for n, _ in D_frozen.named_buffers()]
    assert not any(n.startswith('b32.') for n in params) # b32 has 4 layers: all frozen.
    assert 'b32.conv1.weight' in buffers and 'b32.skip.weight' in buffers
    assert 'b16.conv0.weight' in params
    D7 = tiny_D(res=32, block_kwargs=dict(freeze_layers=7))
    assert not any(n.startswith(('b32.', 'b16.')) for n, _ in D7.named_parameters())

#----------------------------------------------------------------------------
# Mapping: truncation, cutoff, w_avg tracking.

def test_truncation_and_w_avg():
    G = tiny_G().eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(3, 16)
    ws = G.mapping(z, None)
    ws0 = G.mapping(z, None, truncation_psi=0)
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0))
    ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(ws_half[:, :2], (G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg)), atol=1e-6)
    assert torch.equal(ws_half[:, 2:], ws[:, 2:])
    G.train()
    w_avg_before = G.mapping.w_avg.clone()
    w = G.mapping(z, None)[:, 0]
    expected = w.mean(0) + (w_avg_before - w.mean(0)) * 0.995
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)

def test_noise_modes():
    G = tiny_G().eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(1.0)
    z = torch.randn(1, 16)
    a, b = G(z, None, noise_mode='const'), G(z, None, noise_mode='const')
    assert torch.equal(a, b)
    assert not torch.allclose(a, G(z, None, noise_mode='none'))
    assert not torch.allclose(G(z, None, noise_mode='random'), G(z, None, noise_mode='random'))
    with pytest.raises(AssertionError):
        G(z, None, noise_mode='bogus')

def test_fused_and_unfused_modconv_agree():
    G = tiny_G(res=16)
    ws = G.mapping(torch.randn(2, 16), None)
    fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-4)

#----------------------------------------------------------------------------
# Minibatch stddev: group i holds samples i, i+n, i+2n, ... (upstream's layout).

def test_minibatch_std_layout():
    layer = networks.MinibatchStdLayer(group_size=2)
    x = torch.randn(4, 3, 2, 2)
    y = layer(x)
    assert y.shape == (4, 4, 2, 2)
    pair = torch.stack([x[0], x[2]])
    expected = (pair.var(0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(y[0, 3], expected.expand(2, 2), atol=1e-6)
    assert torch.allclose(y[2, 3], y[0, 3])

#----------------------------------------------------------------------------
# D feature API: default output unchanged; logits == (features * w).sum(1) + b.

@pytest.mark.parametrize('c_dim', [0, 4])
def test_feature_api_identities(c_dim):
    D = tiny_D(c_dim=c_dim, res=16)
    names_before = [n for n, _ in list(D.named_parameters()) + list(D.named_buffers())]
    img = torch.randn(4, 3, 16, 16)
    c = torch.eye(4)[torch.tensor([0, 1, 2, 3])][:, :c_dim] if c_dim else torch.zeros([4, 0])
    with torch.no_grad():
        D.b4.out.bias.normal_()
    logits = D(img, c)
    logits2, features = D(img, c, return_features=True)
    assert logits.shape == (4, 1) and features.shape == (4, 16) and features.dtype == torch.float32
    assert torch.equal(logits, logits2)
    w, b = D.last_layer(c)
    assert w.shape == (4, 16) and b.shape == (4,)
    assert torch.allclose(logits[:, 0], (features * w).sum(1) + b, atol=1e-5)
    assert [n for n, _ in list(D.named_parameters()) + list(D.named_buffers())] == names_before

#----------------------------------------------------------------------------
# Bad constructor input gives a message naming it.

def test_bad_resolution_and_architecture():
    with pytest.raises(AssertionError, match='power of 2'):
        networks.SynthesisNetwork(w_dim=8, img_resolution=24, img_channels=3)
    with pytest.raises(AssertionError, match='architecture'):
        tiny_G(architecture='unet')

#----------------------------------------------------------------------------

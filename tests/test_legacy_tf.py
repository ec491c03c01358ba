"""TensorFlow StyleGAN2(-ADA) pickle conversion (docs/compatibility.md §4.3), on synthetic TF pickles built from
our own networks by the inverse variable mapping: the conversion must give back every tensor."""

import contextlib
import io
import pickle
import sys
import types

import numpy as np
import pytest
import torch

import legacy
from torch_utils import misc
from training import networks

#----------------------------------------------------------------------------
# A stand-in for dnnlib.tflib.network.Network: pickles under that dotted name with TF's state layout.

class _FakeTFNetwork:
    def __init__(self, name, static_kwargs, variables, components=None):
        self.state = dict(version=5, name=name, static_kwargs=static_kwargs, components=components or {},
                          build_module_src='raise SystemExit("never run")', build_func_name='G_main', variables=variables)

    def __reduce__(self):
        return (_tf_network_class(), (), self.state)

def _tf_network_class():
    return sys.modules['dnnlib.tflib.network'].Network

@contextlib.contextmanager
def _fake_tflib():
    # A real class named dnnlib.tflib.network.Network while pickling, removed afterwards.
    cls = type('Network', (object,), {'__module__': 'dnnlib.tflib.network'})
    mod = types.ModuleType('dnnlib.tflib.network')
    mod.Network = cls
    pkg = types.ModuleType('dnnlib.tflib')
    pkg.network = mod
    saved = {k: sys.modules.get(k) for k in ('dnnlib.tflib', 'dnnlib.tflib.network')}
    sys.modules.update({'dnnlib.tflib': pkg, 'dnnlib.tflib.network': mod})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

def tf_dumps(obj):
    with _fake_tflib():
        return pickle.dumps(obj, protocol=3)

def _np(t):
    return t.detach().numpy().astype(np.float32)

def _to_tf_conv(w, flip=False):
    v = _np(w).transpose(2, 3, 1, 0) # [O,I,kh,kw] -> [kh,kw,I,O]
    return np.ascontiguousarray(v[::-1, ::-1] if flip else v)

#----------------------------------------------------------------------------
# Inverse of legacy.convert_tf_generator / convert_tf_discriminator.

def tf_generator_from(G, static_kwargs):
    t = dict(misc.named_params_and_buffers(G))
    mapping, synthesis = [], []
    for name, v in t.items():
        if name.startswith('mapping.fc') or name.startswith('mapping.embed'):
            layer, var = name.split('.')[1:]
            tf_layer = 'LabelEmbed' if layer == 'embed' else f'Dense{layer[2:]}'
            mapping.append((f'{tf_layer}/{var}', _np(v).T.copy() if var == 'weight' else _np(v)))
    synthesis.append(('4x4/Const/const', _np(t['synthesis.b4.const'])[None]))
    for r in G.synthesis.block_resolutions:
        for layer, tf_layer in (('conv0', 'Conv0_up'), ('conv1', 'Conv1' if r > 4 else 'Conv'), ('torgb', 'ToRGB'), ('skip', 'Skip')):
            p = f'synthesis.b{r}.{layer}'
            if p + '.weight' not in t:
                continue
            synthesis.append((f'{r}x{r}/{tf_layer}/weight', _to_tf_conv(t[p + '.weight'], flip=layer in ('conv0', 'skip'))))
            if layer == 'skip':
                continue
            synthesis.append((f'{r}x{r}/{tf_layer}/bias', _np(t[p + '.bias'])))
            synthesis.append((f'{r}x{r}/{tf_layer}/mod_weight', _np(t[p + '.affine.weight']).T.copy()))
            synthesis.append((f'{r}x{r}/{tf_layer}/mod_bias', _np(t[p + '.affine.bias']) - 1))
            if layer != 'torgb':
                synthesis.append((f'{r}x{r}/{tf_layer}/noise_strength', _np(t[p + '.noise_strength'])))
                idx = int(np.log2(r)) * 2 - 5 + int(layer[-1])
                synthesis.append((f'noise{idx}', _np(t[p + '.noise_const'])[None, None]))
    return _FakeTFNetwork('G', static_kwargs, [('dlatent_avg', _np(t['mapping.w_avg']))], components=dict(
        mapping=_FakeTFNetwork('G_mapping', {}, mapping), synthesis=_FakeTFNetwork('G_synthesis', {}, synthesis)))

def tf_discriminator_from(D, static_kwargs):
    variables = []
    names = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip', 'conv': 'Conv', 'fc': 'Dense0'}
    for name, v in misc.named_params_and_buffers(D):
        if name.endswith('resample_filter'):
            continue
        parts = name.split('.')
        if parts[0] == 'mapping':
            tf_layer = 'LabelEmbed' if parts[1] == 'embed' else f'Mapping{parts[1][2:]}'
        elif parts[1] == 'out':
            tf_layer = 'Output'
        else:
            r = int(parts[0][1:])
            tf_layer = f'{r}x{r}/{names[parts[1]]}'
        value = _np(v) if parts[-1] == 'bias' else (_np(v).T.copy() if v.ndim == 2 else _to_tf_conv(v))
        variables.append((f'{tf_layer}/{parts[-1]}', value))
    return _FakeTFNetwork('D', static_kwargs, variables)

#----------------------------------------------------------------------------
# A small TF-style (G, D, Gs) pickle and the torch networks it was made from.

G_TF_KWARGS = dict(latent_size=16, label_size=3, dlatent_size=16, resolution=16, num_channels=3, mapping_layers=2,
                   fmap_base=64, fmap_max=16, architecture='resnet', truncation_psi=0.5)
D_TF_KWARGS = dict(label_size=3, resolution=16, num_channels=3, fmap_base=64, fmap_max=16, mapping_layers=2,
                   mapping_fmaps=16, mbstd_group_size=2, architecture='resnet')

def make_tf_pickle(seed=0):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture='resnet'))
    D = networks.Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, cmap_dim=16,
        mapping_kwargs=dict(num_layers=2, embed_features=16, layer_features=16, lr_multiplier=0.1),
        epilogue_kwargs=dict(mbstd_group_size=2))
    with torch.no_grad():
        for p in list(G.parameters()) + list(D.parameters()) + [G.mapping.w_avg]:
            p.add_(0.1 * torch.randn(p.shape))
    tf_G = tf_generator_from(G, G_TF_KWARGS)
    blob = tf_dumps((tf_G, tf_discriminator_from(D, D_TF_KWARGS), tf_G))
    return blob, G, D

#----------------------------------------------------------------------------

def test_tf_pickle_converts_to_identical_tensors():
    blob, G, D = make_tf_pickle()
    data = legacy.load_network_pkl(io.BytesIO(blob))
    for key, ref in (('G', G), ('G_ema', G), ('D', D)):
        got = dict(misc.named_params_and_buffers(data[key]))
        for name, t in misc.named_params_and_buffers(ref):
            assert torch.allclose(got[name], t, atol=0, rtol=0), (key, name)
    z, c = torch.randn(2, 16), torch.eye(3)[:2]
    assert torch.equal(data['G_ema'](z, c, noise_mode='const'), G.eval()(z, c, noise_mode='const'))
    assert data['augment_pipe'] is None and data['training_set_kwargs'] is None

def test_tf_pickle_bad_settings_and_versions():
    _, G, _ = make_tf_pickle()
    tf_G = tf_generator_from(G, dict(G_TF_KWARGS, bogus_option=1))
    blob = tf_dumps((tf_G, tf_G, tf_G))
    with pytest.raises(legacy.NetworkPickleError, match='bogus_option'):
        legacy.load_network_pkl(io.BytesIO(blob))
    tf_G = tf_generator_from(G, G_TF_KWARGS)
    tf_G.state['version'] = 3
    with pytest.raises(legacy.NetworkPickleError, match='version 3'):
        legacy.load_network_pkl(io.BytesIO(tf_dumps((tf_G, tf_G, tf_G))))

#----------------------------------------------------------------------------
# legacy.py CLI: TF pickle -> our pickle; never overwrites --dest; bad --source is one line.

def test_legacy_cli_converts_and_refuses_overwrite(tmp_path):
    from click.testing import CliRunner
    blob, G, _ = make_tf_pickle()
    src, dest = tmp_path / 'tf.pkl', tmp_path / 'out.pkl'
    src.write_bytes(blob)
    result = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(src), '--dest', str(dest), '--force-fp16', 'true'])
    assert result.exit_code == 0, result.output
    with open(dest, 'rb') as f:
        data = legacy.load_network_pkl(f)
    assert data['G_ema'].synthesis.b16.use_fp16 and data['G_ema'].init_kwargs.synthesis_kwargs.conv_clamp == 256
    assert torch.equal(data['G_ema'].synthesis.b16.conv1.weight, G.synthesis.b16.conv1.weight)
    again = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(src), '--dest', str(dest)])
    assert again.exit_code != 0 and 'already exists' in again.output
    (tmp_path / 'bad.pkl').write_bytes(blob[:100])
    bad = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(tmp_path / 'bad.pkl'), '--dest', str(tmp_path / 'x.pkl')])
    assert bad.exit_code != 0 and len([l for l in bad.output.splitlines() if l.startswith('Error:')]) == 1
    assert not (tmp_path / 'x.pkl').exists()

#----------------------------------------------------------------------------

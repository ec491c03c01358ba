"""Equivalence with upstream StyleGAN2-ADA-pytorch, both directions, on the CPU.

Runs only when STYLEGAN2_ADA_DIR points to an upstream checkout (it is never part of this
repository). Upstream code runs in a separate process with ITS torch_utils on sys.path:
  - theirs in ours: upstream builds networks, pickles them and records outputs; we load the pickle
    with legacy.load_network_pkl (safe path, no exec) and compare outputs;
  - ours in theirs: we pickle our networks; upstream's legacy.load_network_pkl loads them (exec'ing
    our embedded networks.py against upstream's torch_utils) and records outputs; we compare.
Images must agree to 1e-3 absolute, PNG pixels within 1 level, D logits to 1e-3 (relative for large logits).
"""

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

UPSTREAM_DIR = os.environ.get('STYLEGAN2_ADA_DIR')
pytestmark = pytest.mark.skipif(not UPSTREAM_DIR, reason='set STYLEGAN2_ADA_DIR to an upstream stylegan2-ada-pytorch checkout')

#----------------------------------------------------------------------------
# Code shared by both sides: network configs, deterministic perturbation, and the outputs to compare.
# It only touches the public API that upstream and we share.

SHARED = textwrap.dedent('''
    import numpy as np, torch
    CONFIGS = {
        'fp16_skipG_resnetD': dict(c_dim=0, G=dict(z_dim=32, w_dim=32, img_resolution=32, img_channels=3,
            mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=32, num_fp16_res=4, conv_clamp=256)),
            D=dict(img_resolution=32, img_channels=3, channel_base=1024, channel_max=32, num_fp16_res=4, conv_clamp=256,
            epilogue_kwargs=dict(mbstd_group_size=4))),
        'cond_resnetG_origD': dict(c_dim=5, G=dict(z_dim=32, w_dim=32, img_resolution=32, img_channels=3,
            mapping_kwargs=dict(num_layers=3), synthesis_kwargs=dict(channel_base=1024, channel_max=32, architecture='resnet')),
            D=dict(img_resolution=32, img_channels=3, channel_base=1024, channel_max=32, architecture='orig',
            block_kwargs=dict(freeze_layers=2), epilogue_kwargs=dict(mbstd_group_size=2))),
        'skipD_orig_G': dict(c_dim=0, G=dict(z_dim=16, w_dim=16, img_resolution=16, img_channels=1,
            mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16, architecture='orig')),
            D=dict(img_resolution=16, img_channels=1, channel_base=256, channel_max=16, architecture='skip')),
    }

    def perturb(G, D, seed):
        # Upstream init leaves biases/noise strengths at 0; make every tensor matter.
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for net in (G, D):
                for name, t in list(net.named_parameters()) + list(net.named_buffers()):
                    if t.dtype.is_floating_point and not name.endswith('resample_filter'):
                        if name.endswith(('bias', 'noise_strength')) or name.endswith('w_avg'):
                            t.add_(0.2 * torch.randn(t.shape, generator=gen))

    def outputs(G, D, c_dim, seeds=(0, 1, 2, 3)):
        out = {}
        G = G.eval(); D = D.eval()
        with torch.no_grad():
            for seed in seeds:
                z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
                c = torch.zeros([1, c_dim])
                if c_dim:
                    c[:, seed % c_dim] = 1
                for psi in (1.0, 0.5):
                    img = G(z, c, truncation_psi=psi, noise_mode='const', force_fp32=True)
                    out[f'img_{seed}_{psi}'] = img.numpy()
                    out[f'png_{seed}_{psi}'] = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
            rnd = np.random.RandomState(99)
            imgs = torch.from_numpy(rnd.randn(4, D.img_channels, D.img_resolution, D.img_resolution).astype(np.float32))
            cs = torch.zeros([4, c_dim])
            if c_dim:
                cs[np.arange(4), np.arange(4) % c_dim] = 1
            out['logits'] = D(imgs, cs, force_fp32=True).numpy()
        return out
''')

UPSTREAM_MAIN = textwrap.dedent('''
    import sys, pickle, numpy as np, torch
    mode, cfg_name, pkl_path, npz_path = sys.argv[1:5]
    import dnnlib, legacy
    from training import networks
    if mode == 'write':
        cfg = CONFIGS[cfg_name]
        torch.manual_seed(0)
        G = networks.Generator(c_dim=cfg['c_dim'], **cfg['G']).eval()
        D = networks.Discriminator(c_dim=cfg['c_dim'], **cfg['D']).eval()
        perturb(G, D, seed=1)
        data = dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dict(resolution=G.img_resolution))
        try:
            from training.augment import AugmentPipe
            pipe = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
            pipe.p.fill_(0.3125)
            data['augment_pipe'] = pipe
        except Exception as err:
            print('no AugmentPipe:', err)
        with open(pkl_path, 'wb') as f:
            pickle.dump(data, f)
    else:
        with open(pkl_path, 'rb') as f:
            data = legacy.load_network_pkl(f)
        G, D = data['G_ema'], data['D']
        print('loaded as', type(G).__module__)
    result = outputs(data['G_ema'], data['D'], G.c_dim)
    if mode == 'read' and data.get('augment_pipe') is not None:
        result['aug_p'] = np.array(float(data['augment_pipe'].p))
    np.savez(npz_path, **result)
''')

def _run_upstream(mode, cfg_name, pkl_path, npz_path):
    script = SHARED + UPSTREAM_MAIN
    env = dict(os.environ, PYTHONPATH=UPSTREAM_DIR, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-c', script, mode, cfg_name, pkl_path, npz_path],
                         cwd=UPSTREAM_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(np.load(npz_path))

def _shared():
    ns = {}
    exec(SHARED, ns) # pylint: disable=exec-used
    return ns

def _compare(ours, theirs):
    report = {}
    assert ours.keys() == theirs.keys()
    img_err = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours if k.startswith('img_'))
    png_err = max(int(np.abs(ours[k].astype(int) - theirs[k].astype(int)).max()) for k in ours if k.startswith('png_'))
    logit_scale = max(1.0, float(np.abs(theirs['logits']).max()))
    logit_err = float(np.abs(ours['logits'] - theirs['logits']).max())
    report.update(img_max_abs_err=img_err, png_max_level_diff=png_err, logits_max_abs_err=logit_err,
                  logits_max_abs=float(np.abs(theirs['logits']).max()),
                  img_max_abs=max(float(np.abs(theirs[k]).max()) for k in theirs if k.startswith('img_')))
    assert img_err <= 1e-3, report
    assert png_err <= 1, report
    assert logit_err <= 1e-3 * logit_scale, report
    return report

def _record(name, report):
    # Keep the measured numbers: pytest -s prints them, and STYLEGAN2_ADA_REPORT collects them as JSON lines.
    print(name, json.dumps(report))
    path = os.environ.get('STYLEGAN2_ADA_REPORT')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps(dict(case=name, **report)) + '\n')

#----------------------------------------------------------------------------

@pytest.mark.parametrize('cfg_name', ['fp16_skipG_resnetD', 'cond_resnetG_origD', 'skipD_orig_G'])
def test_upstream_pickle_in_ours(cfg_name, tmp_path):
    import legacy
    pkl_path, npz_path = str(tmp_path / 'theirs.pkl'), str(tmp_path / 'theirs.npz')
    theirs = _run_upstream('write', cfg_name, pkl_path, npz_path)
    with open(pkl_path, 'rb') as f:
        data = legacy.load_network_pkl(f) # Safe path: embedded upstream source is not executed.
    assert type(data['G_ema']).__module__ == 'training.networks'
    report = _compare(_shared()['outputs'](data['G_ema'], data['D'], data['G_ema'].c_dim), theirs)
    report['augment_pipe_p'] = None if data['augment_pipe'] is None else float(data['augment_pipe'].p)
    _record(f'theirs-in-ours/{cfg_name}', report)
    assert data['training_set_kwargs'] == dict(resolution=data['G_ema'].img_resolution)

@pytest.mark.parametrize('cfg_name', ['fp16_skipG_resnetD', 'cond_resnetG_origD', 'skipD_orig_G'])
def test_our_pickle_in_upstream(cfg_name, tmp_path):
    from training import networks
    ns = _shared()
    cfg = ns['CONFIGS'][cfg_name]
    torch.manual_seed(0)
    G = networks.Generator(c_dim=cfg['c_dim'], **cfg['G']).eval()
    D = networks.Discriminator(c_dim=cfg['c_dim'], **cfg['D']).eval()
    ns['perturb'](G, D, seed=2)
    pkl_path, npz_path = str(tmp_path / 'ours.pkl'), str(tmp_path / 'ours.npz')
    augment_pipe = None
    try: # Our AugmentPipe too, when that module exists: upstream must be able to exec it as well.
        from asa_plugin.augment_pipe import AugmentPipe
        augment_pipe = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1)
        augment_pipe.p.fill_(0.25)
    except ImportError:
        pass
    with open(pkl_path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=augment_pipe, training_set_kwargs=None,
                         asa_plugin=dict(spec='asa', state=dict(step=3, t=torch.ones(2)))), f)
    theirs = _run_upstream('read', cfg_name, pkl_path, npz_path)
    aug_p = theirs.pop('aug_p', None)
    assert (aug_p is None) == (augment_pipe is None) and (aug_p is None or float(aug_p) == 0.25)
    report = _compare(ns['outputs'](G, D, cfg['c_dim']), theirs)
    report['augment_pipe_p_in_upstream'] = None if aug_p is None else float(aug_p)
    _record(f'ours-in-theirs/{cfg_name}', report)

#----------------------------------------------------------------------------
# TF (G, D, Gs) pickle: upstream's converter and ours must build the same networks.

def test_tf_pickle_same_as_upstream_converter(tmp_path):
    import importlib.util
    import legacy
    spec = importlib.util.spec_from_file_location('_tf_fixture', os.path.join(os.path.dirname(__file__), 'test_legacy_tf.py'))
    tf_fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf_fixture)
    blob, _, _ = tf_fixture.make_tf_pickle(seed=3)
    pkl_path, npz_path = str(tmp_path / 'tf.pkl'), str(tmp_path / 'tf.npz')
    with open(pkl_path, 'wb') as f:
        f.write(blob)
    theirs = _run_upstream('read', 'tf', pkl_path, npz_path)
    data = legacy.load_network_pkl(io.BytesIO(blob))
    report = _compare(_shared()['outputs'](data['G_ema'], data['D'], data['G_ema'].c_dim), theirs)
    _record('tf-converter/ours-vs-theirs', report)

#----------------------------------------------------------------------------

"""generate.py end to end on the CPU with a tiny pickle, its bad-input errors, and
dnnlib.util.open_url (local files, file:// and http with cache, sha256 and size limit)."""

import functools
import hashlib
import http.server
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import generate
from training import networks

#----------------------------------------------------------------------------

def _tiny_pickle(path, c_dim=0, img_channels=3):
    torch.manual_seed(123)
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=img_channels,
        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=8, num_fp16_res=1, conv_clamp=256))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=16, img_channels=img_channels, channel_base=128, channel_max=8)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.5)
    G.eval()
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return G

@pytest.fixture(scope='module')
def pkl(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('net') / 'tiny.pkl')
    return path, _tiny_pickle(path)

def run_cli(*args):
    return CliRunner().invoke(generate.generate_images, list(args))

def files_in(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []

#----------------------------------------------------------------------------
# End to end: PNGs equal to G(z = RandomState(seed).randn(1, z_dim)) with upstream's rounding.

def test_generate_end_to_end(pkl, tmp_path):
    path, G = pkl
    outdir = str(tmp_path / 'out')
    result = run_cli('--network', path, '--seeds', '0-2,7', '--outdir', outdir, '--trunc', '0.7', '--device', 'cpu')
    assert result.exit_code == 0, result.output
    assert files_in(outdir) == ['seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0007.png']
    for seed in (0, 7):
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, 8))
        with torch.no_grad():
            img = G(z, torch.zeros([1, 0]), truncation_psi=0.7, noise_mode='const', force_fp32=True)
        expected = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()
        got = np.asarray(PIL.Image.open(os.path.join(outdir, f'seed{seed:04d}.png')))
        assert got.shape == (16, 16, 3) and np.abs(got.astype(int) - expected).max() <= 1
    # Re-running never overwrites existing images.
    again = run_cli('--network', path, '--seeds', '2', '--outdir', outdir)
    assert again.exit_code != 0 and 'already exists' in again.output

def test_conditional_and_grayscale(tmp_path):
    path = str(tmp_path / 'cond.pkl')
    _tiny_pickle(path, c_dim=4, img_channels=1)
    missing = run_cli('--network', path, '--seeds', '1', '--outdir', str(tmp_path / 'a'))
    assert missing.exit_code != 0 and '--class' in missing.output and not os.path.exists(tmp_path / 'a')
    out_of_range = run_cli('--network', path, '--seeds', '1', '--class', '4', '--outdir', str(tmp_path / 'a'))
    assert out_of_range.exit_code != 0 and 'out of range' in out_of_range.output
    ok = run_cli('--network', path, '--seeds', '1', '--class', '2', '--outdir', str(tmp_path / 'b'))
    assert ok.exit_code == 0, ok.output
    assert np.asarray(PIL.Image.open(tmp_path / 'b' / 'seed0001.png')).shape == (16, 16)

def test_projected_w(pkl, tmp_path):
    path, G = pkl
    ws = np.random.RandomState(0).randn(2, G.num_ws, G.w_dim).astype(np.float32)
    np.savez(tmp_path / 'proj.npz', w=ws)
    result = run_cli('--network', path, '--projected-w', str(tmp_path / 'proj.npz'), '--outdir', str(tmp_path / 'o'))
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / 'o') == ['proj00.png', 'proj01.png']
    np.savez(tmp_path / 'bad.npz', w=ws[:, :2])
    bad = run_cli('--network', path, '--projected-w', str(tmp_path / 'bad.npz'), '--outdir', str(tmp_path / 'p'))
    assert bad.exit_code != 0 and 'shape' in bad.output and not os.path.exists(tmp_path / 'p')

#----------------------------------------------------------------------------
# Bad input: one-line error, non-zero exit, no output folder or files.

@pytest.mark.parametrize('case', ['corrupt', 'uncond_class', 'empty_seeds', 'bad_seeds', 'no_seeds', 'bad_url', 'missing_file'])
def test_bad_input(pkl, tmp_path, case):
    path, _ = pkl
    outdir = str(tmp_path / 'out')
    corrupt = str(tmp_path / 'corrupt.pkl')
    with open(path, 'rb') as f:
        blob = f.read()
    with open(corrupt, 'wb') as f:
        f.write(blob[: len(blob) // 3])
    args = {
        'corrupt':      ['--network', corrupt, '--seeds', '0'],
        'uncond_class': ['--network', path, '--seeds', '0', '--class', '1'],
        'empty_seeds':  ['--network', path, '--seeds', ','],
        'bad_seeds':    ['--network', path, '--seeds', '3-1'],
        'no_seeds':     ['--network', path],
        'bad_url':      ['--network', 'http://127.0.0.1:9/nothing.pkl', '--seeds', '0'],
        'missing_file': ['--network', str(tmp_path / 'nope.pkl'), '--seeds', '0'],
    }[case]
    result = run_cli(*args, '--outdir', outdir)
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(error_lines) == 1, result.output
    assert not os.path.exists(outdir)

def test_unwritable_outdir_fails_before_loading(pkl, tmp_path, monkeypatch):
    path, _ = pkl
    (tmp_path / 'file').write_text('x')
    loaded = []
    monkeypatch.setattr(generate, 'load_generator', lambda *args, **kwargs: loaded.append(args))
    result = run_cli('--network', path, '--seeds', '0', '--outdir', str(tmp_path / 'file' / 'out'), '--device', 'cpu')
    assert result.exit_code != 0 and not loaded
    assert [line for line in result.output.splitlines() if line.strip()] == \
        [f'Error: --outdir: {tmp_path / "file"} is not a writable folder; choose another --outdir']

def test_cli_process_exit_code_and_single_line(pkl, tmp_path):
    # The real script, not CliRunner: catches import-path problems too.
    path, _ = pkl
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(b'\x80\x04garbage')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, os.path.join(root, 'generate.py'), '--network', str(bad), '--seeds', '0',
                          '--outdir', str(tmp_path / 'o')], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert res.returncode != 0
    assert [l for l in res.stderr.splitlines() if l.strip()] == [l for l in res.stderr.splitlines() if l.startswith('Error:')]
    assert 'bad.pkl' in res.stderr and not (tmp_path / 'o').exists()

def test_parse_seeds():
    assert generate.parse_seeds('0-3,7') == [0, 1, 2, 3, 7]
    assert generate.parse_seeds('5') == [5]
    for bad in ('', ',', 'a', '4-2', str(2 ** 32)):
        with pytest.raises(ValueError):
            generate.parse_seeds(bad)

#----------------------------------------------------------------------------
# open_url: local http server for downloads.

@pytest.fixture(scope='module')
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('www')
    (root / 'blob.bin').write_bytes(b'x' * 5000)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', str(root)
    server.shutdown()

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

def test_open_url_local_and_file_url(tmp_path):
    p = tmp_path / 'a.bin'
    p.write_bytes(b'abc')
    with dnnlib.util.open_url(str(p)) as f:
        assert f.read() == b'abc'
    with dnnlib.util.open_url(p.as_uri()) as f:
        assert f.read() == b'abc'
    assert dnnlib.util.open_url(str(p), return_filename=True) == str(p)
    with pytest.raises(OSError, match='no such file'):
        dnnlib.util.open_url(str(tmp_path / 'missing.bin'))

def test_open_url_http_cache_sha256_and_limit(http_root, tmp_path):
    base, _ = http_root
    url = base + '/blob.bin'
    good = hashlib.sha256(b'x' * 5000).hexdigest()
    cache = str(tmp_path / 'cache')
    with pytest.raises(OSError, match='sha256'):
        dnnlib.util.open_url(url, cache_dir=cache, sha256='0' * 64, verbose=False)
    assert files_in(cache) == [] # Nothing cached on mismatch, no temp files left.
    with pytest.raises(OSError, match='limit'):
        dnnlib.util.open_url(url, cache_dir=cache, max_bytes=100, verbose=False)
    fname = dnnlib.util.open_url(url, cache_dir=cache, sha256=good, verbose=False, return_filename=True)
    assert open(fname, 'rb').read() == b'x' * 5000 and files_in(cache) == [os.path.basename(fname), os.path.basename(fname) + '.sha256']
    with dnnlib.util.open_url(url, cache_dir=cache, cache=False, verbose=False) as f:
        assert f.read() == b'x' * 5000
    with pytest.raises(OSError, match='HTTP 404'):
        dnnlib.util.open_url(base + '/missing.pkl', cache_dir=cache, verbose=False)

def test_generate_from_url(pkl, http_root, tmp_path, monkeypatch):
    # The pickle served over http; downloaded into the dnnlib cache, then generated from.
    path, _ = pkl
    base, root_dir = http_root
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    with open(path, 'rb') as src, open(os.path.join(root_dir, 'tiny.pkl'), 'wb') as dst:
        dst.write(src.read())
    result = run_cli('--network', base + '/tiny.pkl', '--seeds', '3', '--outdir', str(tmp_path / 'o'))
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / 'o') == ['seed0003.png']
    assert len([n for n in files_in(tmp_path / 'cache' / 'downloads') if not n.endswith('.sha256')]) == 1

#----------------------------------------------------------------------------

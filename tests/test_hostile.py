"""Hostile files and faults (docs/crash-safety.md): every malicious file is built here by the test,
and each test fails on the hole it guards. Network tests talk to a server on 127.0.0.1 only."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _training_utils import ROOT, make_zip

import dnnlib
import legacy
from torch_utils import persistence
from training import networks

#----------------------------------------------------------------------------
# A tiny, valid snapshot with chosen extra entries.

def _tiny_nets():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8)
    return G, D


def _snapshot(path, **extra):
    G, D = _tiny_nets()
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, **extra), f)
    return str(path)

#----------------------------------------------------------------------------
# Code execution through the dataset named in a pickle (calc_metrics.py and compare.py).

_EVIL_MODULE = 'import os\ndef run(**kwargs):\n    open(os.environ["HOSTILE_MARKER"], "w").close()\n'


@pytest.fixture
def evil_dataset_pickle(tmp_path, monkeypatch):
    # A dotted name that imports and calls attacker code (standing in for e.g. sympy.N with a payload).
    (tmp_path / 'evil_mod.py').write_text(_EVIL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / 'PWNED'
    monkeypatch.setenv('HOSTILE_MARKER', str(marker))
    pkl = _snapshot(tmp_path / 'evil.pkl', training_set_kwargs=dict(class_name='evil_mod.run', path='x.zip'))
    return pkl, marker


def test_calc_metrics_never_calls_the_pickles_dataset_class(evil_dataset_pickle):
    import calc_metrics
    pkl, marker = evil_dataset_pickle
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={pkl}', '--metrics=none', '--device=cpu'])
    assert not marker.exists()
    assert res.exit_code != 0 and '--data' in res.output and 'evil_mod.run' in res.output


def test_compare_never_calls_the_pickles_dataset_class(evil_dataset_pickle):
    import click
    import compare
    pkl, marker = evil_dataset_pickle
    with pytest.raises(click.ClickException, match='--data'):
        compare.evaluate_snapshot(pkl, 'fid200_full_effnet')
    assert not marker.exists()


@pytest.mark.parametrize('stored, error', [
    (dict(path=['a.zip']), 'path'),
    (dict(path='a.zip', max_size=True), 'max_size'),
    (dict(path='a.zip', xflip='yes'), 'xflip'),
    (dict(path='a.zip', max_size=0), 'max_size'),
    (dict(path=''), 'does not name'),
])
def test_stored_dataset_values_are_type_checked(stored, error):
    import click
    import calc_metrics
    with pytest.raises(click.ClickException, match=error):
        calc_metrics.stored_dataset_kwargs(stored)


def test_stored_dataset_values_rebuild_our_own_class(tmp_path):
    import calc_metrics
    G, _ = _tiny_nets()
    stored = dict(class_name=calc_metrics.DATASET_CLASS, path='a.zip', xflip=True, max_size=5, use_labels=True,
                  resolution=999, unknown_key=dnnlib.EasyDict(x=1))
    kwargs = calc_metrics.dataset_kwargs_for(G, None, None, stored)
    assert dict(kwargs) == dict(class_name='training.dataset.ImageFolderDataset', path='a.zip', xflip=True, max_size=5,
                                resolution=16, use_labels=False)

#----------------------------------------------------------------------------
# TF pickles: a variable that is not a real ndarray (an EasyDict with __array_interface__ pointing at
# address 8) segfaulted the loader; it must be one NetworkPickleError. Run in a child so a crash shows as one.

_TF_CHILD = r'''
import pickle, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import dnnlib, legacy
from test_legacy_tf import _FakeTFNetwork, tf_dumps
fake = dnnlib.EasyDict(__array_interface__=dict(shape=(1 << 20,), typestr="<f4", data=(8, False), version=3))
nets = [_FakeTFNetwork(n, dict(resolution=16), [("mapping/Dense0/weight", fake)]) for n in ("G", "D", "Gs")]
import io
try:
    legacy.load_network_pkl(io.BytesIO(tf_dumps(tuple(nets))))
except legacy.NetworkPickleError as err:
    print("REFUSED", err)
'''


def test_tf_variable_that_is_not_an_array_is_refused_without_reading_memory():
    proc = subprocess.run([sys.executable, '-c', _TF_CHILD, ROOT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'REFUSED' in proc.stdout and 'not a numeric numpy array' in proc.stdout


def test_easydict_does_not_answer_dunder_names():
    d = dnnlib.EasyDict(__array_interface__=1, __deepcopy__=2, z_dim=3)
    assert d.z_dim == 3
    with pytest.raises(AttributeError):
        d.__array_interface__  # pylint: disable=pointless-statement
    assert not hasattr(d, '__deepcopy__')

#----------------------------------------------------------------------------
# The unsafe opt-in: only explicit true values switch it on; unknown values are refused.

class _MakesDir:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize('value', ['false', 'False', 'no', 'off', 'OFF', '0', ''])
def test_unsafe_opt_in_false_words_keep_loading_safe(tmp_path, monkeypatch, value):
    monkeypatch.setenv(persistence.UNSAFE_ENV_VAR, value)
    target = tmp_path / 'ran'
    with pytest.raises(legacy.NetworkPickleError, match='os.mkdir|posix.mkdir'):
        legacy.load_network_pkl(__import__('io').BytesIO(pickle.dumps(dict(G=_MakesDir(str(target))))))
    assert not target.exists()
    assert persistence.unsafe_exec_allowed() is False


@pytest.mark.parametrize('value', ['1', 'true', 'YES', 'on'])
def test_unsafe_opt_in_true_words(monkeypatch, value):
    monkeypatch.setenv(persistence.UNSAFE_ENV_VAR, value)
    assert persistence.unsafe_exec_allowed() is True


@pytest.mark.parametrize('value', ['maybe', '2', 'ture', 'disable'])
def test_unsafe_opt_in_unknown_value_is_refused(monkeypatch, value):
    monkeypatch.setenv(persistence.UNSAFE_ENV_VAR, value)
    with pytest.raises(legacy.NetworkPickleError, match=persistence.UNSAFE_ENV_VAR):
        legacy.load_network_pkl(__import__('io').BytesIO(pickle.dumps(dict(G=1))))

#----------------------------------------------------------------------------
# Stored constructor arguments are checked before any network is built; every failure is one
# NetworkPickleError. The pickles carry a foreign module source, as upstream's do, so the loader
# rebuilds our classes from the stored arguments.

def _foreign_pickle(obj, **kwarg_overrides):
    import io

    class P(pickle.Pickler):
        def reducer_override(self, o):
            if persistence.is_persistent(o) and not isinstance(o, type):
                fn, args, state = o.__reduce_ex__(2)[:3]
                meta = dict(args[0], module_src='# not our source\n')
                if meta['class_name'] == 'Generator':
                    meta['state'] = dict(meta['state'], _init_kwargs=dict(meta['state']['_init_kwargs'], **kwarg_overrides))
                return fn, (meta,), state
            return NotImplemented
    f = io.BytesIO()
    P(f).dump(obj)
    return f.getvalue()


@pytest.mark.parametrize('override, key', [
    (dict(img_resolution=3), 'img_resolution'),
    (dict(w_dim=2 ** 20), 'w_dim'),
    (dict(z_dim=-1), 'z_dim'),
    (dict(synthesis_kwargs=dict(architecture='evil')), 'architecture'),
    (dict(mapping_kwargs=dict(lr_multiplier=float('nan'))), 'lr_multiplier'),
])
def test_stored_constructor_arguments_are_range_checked(override, key):
    import io
    G, D = _tiny_nets()
    blob = _foreign_pickle(dict(G=G, D=D, G_ema=G), **override)
    with pytest.raises(legacy.NetworkPickleError, match=key) as info:
        legacy.load_network_pkl(io.BytesIO(blob))
    assert '\n' not in str(info.value)


def test_foreign_pickle_with_sane_arguments_still_loads():
    import io
    G, D = _tiny_nets()
    loaded = legacy.load_network_pkl(io.BytesIO(_foreign_pickle(dict(G=G, D=D, G_ema=G))))
    assert loaded['G_ema'].img_resolution == 16


def test_constructor_failure_is_one_network_pickle_error(monkeypatch):
    # Arguments that pass the checks can still trip an assert inside a constructor (a combination the
    # checks do not model); it must surface as NetworkPickleError, not as a raw AssertionError.
    import io
    G, D = _tiny_nets()
    blob = _foreign_pickle(dict(G=G, D=D, G_ema=G))
    def refuse(self, *args, **kwargs):
        raise AssertionError('inconsistent arguments')
    monkeypatch.setattr(networks.Generator, '__init__', refuse)
    with pytest.raises(legacy.NetworkPickleError, match='inconsistent arguments'):
        legacy.load_network_pkl(io.BytesIO(blob))


#----------------------------------------------------------------------------
# Tensor rebuild: an offset past the end of its storage must not hand out uninitialised memory.

class _TensorView:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        import collections
        storage, offset, size, stride = self.args
        return torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict())


@pytest.mark.parametrize('offset, size, stride', [(1000, (4,), (1,)), (2, (4,), (1,)), (0, (2, 2), (4, 1)), (0, (1 << 40,), (0,))])
def test_tensor_view_outside_its_storage_is_refused(offset, size, stride):
    import io
    G, D = _tiny_nets()
    storage = torch.arange(4, dtype=torch.float32).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    blob = pickle.dumps(dict(G=G, D=D, G_ema=G, extra=_TensorView(typed, offset, size, stride)))
    with pytest.raises(legacy.NetworkPickleError, match='storage'):
        legacy.load_network_pkl(io.BytesIO(blob))


def test_tensor_view_inside_its_storage_loads():
    import io
    G, D = _tiny_nets()
    storage = torch.arange(4, dtype=torch.float32).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    blob = pickle.dumps(dict(G=G, D=D, G_ema=G, extra=_TensorView(typed, 1, (3,), (1,))))
    assert legacy.load_network_pkl(io.BytesIO(blob))['extra'].tolist() == [1, 2, 3]

#----------------------------------------------------------------------------
# generate.py: --seeds bounded before expansion, non-finite --trunc refused.

def test_huge_seed_range_is_refused_before_expansion():
    import generate
    import tracemalloc
    tracemalloc.start()
    with pytest.raises(ValueError, match='too large'):
        generate.parse_seeds('0-99999999999')
    with pytest.raises(ValueError, match='more than'):
        generate.parse_seeds('0-4000000000')
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20
    assert generate.parse_seeds('3-5,9') == [3, 4, 5, 9]


@pytest.mark.parametrize('trunc', ['nan', 'inf', '-inf'])
def test_non_finite_trunc_is_refused(tmp_path, trunc):
    import generate
    pkl = _snapshot(tmp_path / 'net.pkl')
    res = CliRunner().invoke(generate.generate_images, [f'--network={pkl}', '--seeds=0', f'--trunc={trunc}',
                                                        f'--outdir={tmp_path / "out"}', '--device=cpu'])
    assert res.exit_code != 0 and '--trunc' in res.output
    assert not (tmp_path / 'out').exists()

#----------------------------------------------------------------------------
# dataset_tool.py: images smaller than training accepts are refused at conversion time.

@pytest.mark.parametrize('args', [[], ['--resolution=2']])
def test_dataset_tool_refuses_images_below_4x4(tmp_path, args):
    import PIL.Image
    import dataset_tool
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(3):
        PIL.Image.new('RGB', (1, 1) if not args else (8, 8), (i, 0, 0)).save(src / f'{i}.png')
    res = CliRunner().invoke(dataset_tool.main, [f'--source={src}', f'--dest={tmp_path / "out.zip"}'] + args)
    assert res.exit_code != 0 and '4' in res.output
    assert not (tmp_path / 'out.zip').exists()

#----------------------------------------------------------------------------
# Snapshots are never replaced: upstream's name for the first snapshot of a whole kimg, the exact
# kimg for later ones (ticks under 1 kimg, a SIGTERM at 4.7 kimg); grids alike.

def _state(nimg):
    return dict(progress=dict(cur_nimg=nimg, cur_tick=1, batch_idx=0, tick_start_nimg=nimg))


def test_snapshots_and_grids_within_one_kimg_get_unique_names(tmp_path):
    from training import checkpoint
    run = str(tmp_path)
    first = checkpoint.save_checkpoint(run, 4032, {'G': 1}, _state(4032))
    final = checkpoint.save_checkpoint(run, 4700, {'G': 2}, _state(4700))
    assert os.path.basename(first) == 'network-snapshot-000004.pkl'
    assert os.path.basename(final) == 'network-snapshot-000004.700.pkl'
    assert checkpoint.state_path_for(final).endswith('training-state-000004.700.pt')
    for pkl, g in ((first, 1), (final, 2)):
        assert checkpoint.snapshot_status(pkl)[0] == 'exact'
        with open(pkl, 'rb') as f:
            assert pickle.load(f)['G'] == g
    assert checkpoint.snapshot_kimg(first) == 4.032 and checkpoint.snapshot_kimg(final) == 4.7
    grids = [checkpoint.fresh_path(run, nimg, 'fakes{}.png') for nimg in (4032,)]
    open(grids[0], 'wb').close()
    assert os.path.basename(checkpoint.fresh_path(run, 4700, 'fakes{}.png')) == 'fakes000004.700.png'
    assert os.path.basename(checkpoint.fresh_path(run, 8000, 'fakes{}.png')) == 'fakes000008.png'


def test_kill_between_snapshot_and_sidecar_loses_nothing(tmp_path, monkeypatch):
    # The second snapshot of the same whole kimg is killed after its files, before its sidecars:
    # the first pair still verifies, and the second resumes exactly through its state's digest.
    from training import checkpoint
    run = tmp_path / '00000-run'
    run.mkdir()
    first = checkpoint.save_checkpoint(str(run), 8, {'G': 1}, _state(8))
    def killed(path, digest):
        raise KeyboardInterrupt('killed')
    monkeypatch.setattr(checkpoint, '_write_sidecar', killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(str(run), 16, {'G': 2}, _state(16))
    monkeypatch.undo()
    second = str(run / 'network-snapshot-000000.016.pkl')
    assert checkpoint.verify(first) and checkpoint.snapshot_status(first)[0] == 'exact'
    assert checkpoint.find_latest(str(tmp_path)) == (second, checkpoint.state_path_for(second))
    checkpoint.check_snapshot(second)  # An explicit --resume of it is accepted too.
    assert checkpoint.load_state(checkpoint.state_path_for(second), second)['progress']['cur_nimg'] == 16


def test_disk_full_at_the_sidecar_keeps_both_snapshots_usable(tmp_path, monkeypatch):
    import errno
    from training import checkpoint
    run = str(tmp_path)
    first = checkpoint.save_checkpoint(run, 8, {'G': 1}, _state(8))
    real = checkpoint.atomic_write_bytes
    def full(path, data):
        if path.endswith('.sha256'):
            raise checkpoint._write_error('write', path, OSError(errno.ENOSPC, 'No space left on device'))
        return real(path, data)
    monkeypatch.setattr(checkpoint, 'atomic_write_bytes', full)
    with pytest.raises(checkpoint.CheckpointWriteError, match='Files written earlier are intact'):
        checkpoint.save_checkpoint(run, 16, {'G': 2}, _state(16))
    monkeypatch.undo()
    assert checkpoint.verify(first) and checkpoint.verify(checkpoint.state_path_for(first))
    assert checkpoint.find_latest(run)[0].endswith('network-snapshot-000000.016.pkl')


def test_existing_exact_name_is_never_overwritten(tmp_path):
    from training import checkpoint
    for name in ('network-snapshot-000004.pkl', 'network-snapshot-000004.700.pkl'):
        (tmp_path / name).write_bytes(b'someone else')
    with pytest.raises(checkpoint.CheckpointWriteError, match='already exists'):
        checkpoint.save_checkpoint(str(tmp_path), 4700, {'G': 1}, None)
    assert (tmp_path / 'network-snapshot-000004.700.pkl').read_bytes() == b'someone else'


def test_compare_reads_the_true_kimg(tmp_path):
    import compare
    from training import checkpoint
    checkpoint.save_checkpoint(str(tmp_path), 32, {'G': 1}, _state(32))
    checkpoint.save_checkpoint(str(tmp_path), 500, {'G': 2}, _state(500))
    assert [k for k, _ in compare.find_snapshots(str(tmp_path))] == [0.032, 0.5]

#----------------------------------------------------------------------------
# --resume=latest picks the newest run with the same dataset and options, says so, and refuses
# when no run matches and there are several; identical options give no architecture warning.

def _fake_run(outdir, run_id, data, aug):
    import json
    from training import checkpoint, config
    _desc, opts = config.setup_training_options(outdir=str(outdir), data=data, cfg='tiny', aug=aug, device='cpu')
    run = outdir / f'{run_id:05d}-tiny-{aug}'
    run.mkdir(parents=True)
    opts['run_dir'] = str(run)
    (run / 'training_options.json').write_text(json.dumps(opts))
    common = dict(c_dim=0, img_resolution=16, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**opts['G_kwargs'], **common)
    D = dnnlib.util.construct_class_by_name(**opts['D_kwargs'], **common)
    return checkpoint.save_checkpoint(str(run), 1000, dict(training_set_kwargs=opts['training_set_kwargs'], G=G, D=D, G_ema=G,
                                                            augment_pipe=None), _state(1000))


def test_resume_latest_picks_the_run_with_matching_options(tmp_path, capsys):
    from training import config
    data = make_zip(str(tmp_path / 'tiny.zip'))
    outdir = tmp_path / 'runs'
    ada_pkl = _fake_run(outdir, 0, data, 'ada')
    noaug_pkl = _fake_run(outdir, 1, data, 'noaug')
    capsys.readouterr()
    _desc, opts = config.setup_training_options(outdir=str(outdir), data=data, cfg='tiny', aug='ada', device='cpu', resume='latest')
    err = capsys.readouterr().err
    assert opts['resume_pkl'] == ada_pkl and opts['resume_state'].endswith('training-state-000001.pt')
    assert '00000-tiny-ada' in err and 'skipped newer runs: 00001-tiny-noaug (aug: noaug != ada' in err
    assert 'architecture differs' not in err and '<default>' not in err
    _desc, opts = config.setup_training_options(outdir=str(outdir), data=data, cfg='tiny', aug='noaug', device='cpu', resume='latest')
    assert opts['resume_pkl'] == noaug_pkl


def test_resume_path_is_exact_only_for_the_same_run(tmp_path, capsys):
    # A snapshot resumed with another --aug (or dataset) is a fine-tune: its training state, whose
    # plugin state belongs to the old spec, must not be applied (it made the loop crash).
    from training import config
    data = make_zip(str(tmp_path / 'tiny.zip'))
    ada_pkl = _fake_run(tmp_path / 'runs', 0, data, 'ada')
    _desc, opts = config.setup_training_options(outdir=str(tmp_path / 'new'), data=data, cfg='tiny', aug='ada', device='cpu', resume=ada_pkl)
    assert opts['resume_state'].endswith('training-state-000001.pt')
    capsys.readouterr()
    _desc, opts = config.setup_training_options(outdir=str(tmp_path / 'new'), data=data, cfg='tiny', aug='ada+asa', device='cpu', resume=ada_pkl)
    assert 'resume_state' not in opts and opts['resume_pkl'] == ada_pkl and opts['ada_kimg'] == 100
    assert 'weights only (fine-tuning)' in capsys.readouterr().err


def test_resume_latest_refuses_when_no_run_matches_and_several_exist(tmp_path):
    import click
    from training import config
    data = make_zip(str(tmp_path / 'tiny.zip'))
    outdir = tmp_path / 'runs'
    _fake_run(outdir, 0, data, 'ada')
    _fake_run(outdir, 1, data, 'noaug')
    with pytest.raises(click.BadParameter, match='none of the 2 runs'):
        config.setup_training_options(outdir=str(outdir), data=data, cfg='tiny', aug='diffaug', device='cpu', resume='latest')
    other = make_zip(str(tmp_path / 'other.zip'), seed=1)
    with pytest.raises(click.BadParameter, match='other.zip|none of'):
        config.setup_training_options(outdir=str(outdir), data=other, cfg='tiny', aug='ada', device='cpu', resume='latest')

#----------------------------------------------------------------------------
# Downloads from hostile servers (127.0.0.1 only, every wait bounded): one that never answers, one
# that drips a byte at a time, one that streams forever; SIGTERM mid-download; a cached file that
# changed since it was downloaded.

import socketserver  # noqa: E402  (grouped with the tests that use it)
import threading  # noqa: E402
import time  # noqa: E402


class _HostileHandler(socketserver.BaseRequestHandler):
    def handle(self):
        stop = self.server.stop
        self.request.settimeout(5)
        try:
            line = self.request.recv(4096).split(b' ')
            mode = line[1].decode().strip('/') if len(line) > 1 else ''
            if mode == 'silent':
                stop.wait(30)
                return
            if mode == 'huge':
                self.request.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n')
                stop.wait(30)
                return
            if mode == 'drip':
                self.request.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
                while not stop.wait(0.2):
                    self.request.sendall(b'x')
            if mode == 'endless':
                self.request.sendall(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')
                block = b'\0' * (1 << 16)
                while not stop.is_set():
                    self.request.sendall(block)
        except OSError:
            pass


@pytest.fixture
def hostile_server():
    server = socketserver.ThreadingTCPServer(('127.0.0.1', 0), _HostileHandler)
    server.daemon_threads = True
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.stop.set()
    server.shutdown()
    server.server_close()


def _open_within(url, cache, seconds):
    # open_url in a thread, so that a download without limits fails the test instead of hanging it.
    out = {}
    def run():
        try:
            out['result'] = dnnlib.util.open_url(url, cache_dir=str(cache), verbose=False)
        except Exception as err:  # pylint: disable=broad-except
            out['error'] = err
    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f'open_url still running after {seconds} s'
    return out, time.monotonic() - start


def _temp_files(cache):
    return [n for n in os.listdir(cache) if n.endswith('.tmp')] if os.path.isdir(cache) else []


@pytest.mark.parametrize('mode, match', [('silent', 'ReadTimeout|within'), ('drip', 'within'), ('huge', 'over the limit')])
def test_download_has_a_deadline_and_a_size_check(hostile_server, tmp_path, monkeypatch, mode, match):
    monkeypatch.setenv('DNNLIB_DOWNLOAD_DEADLINE', '2')
    out, elapsed = _open_within(f'{hostile_server}/{mode}', tmp_path / 'cache', 20)
    assert isinstance(out.get('error'), OSError) and __import__('re').search(match, str(out['error'])), out
    assert elapsed < 15
    assert _temp_files(tmp_path / 'cache') == []


def test_download_streaming_forever_stops_at_the_size_cap(hostile_server, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_DOWNLOAD_MAX_MB', '2')
    out, _ = _open_within(f'{hostile_server}/endless', tmp_path / 'cache', 20)
    assert 'limit' in str(out.get('error')), out
    assert os.listdir(tmp_path / 'cache') == []


def test_download_settings_from_the_environment_are_checked(monkeypatch):
    monkeypatch.setenv('DNNLIB_DOWNLOAD_DEADLINE', 'soon')
    with pytest.raises(OSError, match='DNNLIB_DOWNLOAD_DEADLINE'):
        dnnlib.util.open_url('http://127.0.0.1:9/x.pkl', cache_dir='/nonexistent-cache', verbose=False)


_SIGTERM_CHILD = r'''
import sys
sys.path.insert(0, sys.argv[1])
import dnnlib
dnnlib.util.open_url(sys.argv[2], cache_dir=sys.argv[3], verbose=False)
'''


def test_sigterm_during_download_leaves_no_temp_file(hostile_server, tmp_path):
    import signal
    cache = tmp_path / 'cache'
    proc = subprocess.Popen([sys.executable, '-c', _SIGTERM_CHILD, ROOT, f'{hostile_server}/drip', str(cache)])
    try:
        deadline = time.monotonic() + 60
        while not _temp_files(cache) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _temp_files(cache), 'the download never started'
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (143, -signal.SIGTERM)
    assert _temp_files(cache) == []


def test_cached_download_that_changed_is_refused(tmp_path):
    import http.server
    import functools
    (tmp_path / 'www').mkdir()
    (tmp_path / 'www' / 'net.pkl').write_bytes(b'network bytes')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / 'www'))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/net.pkl'
        cached = dnnlib.util.open_url(url, cache_dir=str(tmp_path / 'cache'), verbose=False, return_filename=True)
        assert open(cached, 'rb').read() == b'network bytes'
        with open(cached, 'wb') as f:
            f.write(b'swapped bytes')  # e.g. another user of a shared cache
        with pytest.raises(OSError, match='changed since it was downloaded'):
            dnnlib.util.open_url(url, cache_dir=str(tmp_path / 'cache'), verbose=False)
    finally:
        server.shutdown()
        server.server_close()


def test_stale_temp_files_of_killed_downloads_are_swept(hostile_server, tmp_path, monkeypatch):
    from dnnlib import download
    cache = tmp_path / 'cache'
    cache.mkdir()
    url = f'{hostile_server}/huge'
    stale = cache / f'.{dnnlib.util._cache_file_name(url)}.abc.tmp'
    stale.write_bytes(b'half a file')
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    monkeypatch.setattr(download, 'DEFAULT_DEADLINE_S', 2.0)
    _open_within(url, cache, 20)
    assert not stale.exists()

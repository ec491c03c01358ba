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

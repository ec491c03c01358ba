"""custom_ops: cache key, lock, build-in-temp + rename, and the fallback/strict policy (no real CUDA builds)."""

import os
import threading
import time
import types

import pytest
import torch

from torch_utils import custom_ops

#----------------------------------------------------------------------------
# Every test gets a private cache dir and clean in-process state.

@pytest.fixture(autouse=True)
def _clean_state(tmp_path, monkeypatch):
    monkeypatch.setattr(custom_ops, 'cache_dir', str(tmp_path / 'cache'))
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    for name in ('_plugins', '_failures', '_op_plugins', '_report', '_op_errors'):
        monkeypatch.setattr(custom_ops, name, dict())
    monkeypatch.setattr(custom_ops, '_warned', set())
    monkeypatch.delenv(custom_ops.STRICT_ENV, raising=False)
    yield

def _write(path, text):
    path.write_text(text)
    return str(path)

#----------------------------------------------------------------------------

def test_cache_key_tracks_sources_flags_and_arch(tmp_path):
    src = _write(tmp_path / 'op.cpp', 'int f() { return 1; }\n')
    key = custom_ops.cache_key('op_plugin', [src], {}, 'sm_90')
    assert key == custom_ops.cache_key('op_plugin', [src], {}, 'sm_90')
    assert key != custom_ops.cache_key('op_plugin', [src], {}, 'sm_80')
    assert key != custom_ops.cache_key('op_plugin', [src], {'extra_cflags': ['-O3']}, 'sm_90')
    _write(tmp_path / 'op.cpp', 'int f() { return 2; }\n')
    assert key != custom_ops.cache_key('op_plugin', [src], {}, 'sm_90')

#----------------------------------------------------------------------------

def test_file_lock_is_exclusive_and_times_out(tmp_path):
    lock = str(tmp_path / 'x.lock')
    with custom_ops.file_lock(lock, timeout=1):
        with pytest.raises(custom_ops.PluginBuildError, match='Timed out') as info:
            with custom_ops.file_lock(lock, timeout=0.2, poll=0.05):
                pass
        assert 'delete' in info.value.fix
    with custom_ops.file_lock(lock, timeout=0.2):   # released on exit
        pass

#----------------------------------------------------------------------------

def test_concurrent_callers_build_once_then_load_from_cache(tmp_path, monkeypatch):
    src = _write(tmp_path / 'op.cpp', '// op\n')
    builds = []
    def fake_build(module_name, sources, build_dir, build_kwargs, arch):
        builds.append(build_dir)
        time.sleep(0.3)                                     # others must wait on the lock meanwhile
        open(os.path.join(build_dir, module_name + '.so'), 'w', encoding='utf-8').close()
        return types.SimpleNamespace(origin='built')
    monkeypatch.setattr(custom_ops, '_run_build', fake_build)
    monkeypatch.setattr(custom_ops, '_import_built', lambda name, folder: types.SimpleNamespace(origin=folder))
    results = []
    def worker():
        results.append(custom_ops._build_or_load('op_plugin', [src], [], None, {}))
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 3
    entries = os.listdir(custom_ops.cache_dir)
    folders = [e for e in entries if not e.endswith('.lock')]
    assert len(folders) == 1 and '.tmp-' not in folders[0]             # temp dir renamed into place
    assert os.path.isfile(os.path.join(custom_ops.cache_dir, folders[0], 'BUILD_OK'))
    assert not os.path.exists(builds[0])
    assert sum(r.origin == 'built' for r in results) == 1              # the others loaded the cache

#----------------------------------------------------------------------------
# One real (fast) failing JIT build: a C++ syntax error, no torch headers involved.

def test_failing_build_warns_once_with_summary_then_falls_back(tmp_path):
    src = _write(tmp_path / 'broken_op.cpp', 'int broken( { return 0; }\n')
    env_before = dict(os.environ)
    loader = lambda: custom_ops.get_plugin('broken_op_plugin', sources=[src])  # noqa: E731
    with pytest.warns(RuntimeWarning, match='Failed to build CUDA kernels for broken_op') as record:
        assert custom_ops._plugin_for_op('broken_op', loader) is None
    message = str(record[0].message)
    assert 'Likely fix' in message and 'STYLEGAN_ASA_STRICT_OPS' in message and 'error' in message
    assert dict(os.environ) == env_before                              # no environment mutation
    assert [e for e in os.listdir(custom_ops.cache_dir) if '.tmp-' in e] == []
    with pytest.raises(custom_ops.PluginBuildError):                   # not retried, same error
        custom_ops.get_plugin('broken_op_plugin', sources=[src])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                 # second use: silent
        assert custom_ops._plugin_for_op('broken_op', loader) is None

#----------------------------------------------------------------------------

def test_strict_mode_raises_instead_of_falling_back(monkeypatch):
    def failing_loader():
        raise custom_ops.PluginBuildError('x_plugin', 'nvcc not found', 'install the CUDA toolkit', 'log')
    monkeypatch.setenv(custom_ops.STRICT_ENV, '1')
    assert custom_ops.strict_mode()
    with pytest.raises(custom_ops.PluginBuildError, match='nvcc not found'):
        custom_ops._plugin_for_op('x', failing_loader)
    monkeypatch.setenv(custom_ops.STRICT_ENV, '0')
    assert not custom_ops.strict_mode()
    with pytest.warns(RuntimeWarning):
        assert custom_ops._plugin_for_op('x', failing_loader) is None   # cached failure, warned once
    monkeypatch.setenv(custom_ops.STRICT_ENV, '1')                     # strict set later still raises
    with pytest.raises(custom_ops.PluginBuildError):
        custom_ops._plugin_for_op('x', failing_loader)

#----------------------------------------------------------------------------

def test_select_plugin_reasons_and_report(monkeypatch):
    calls = []
    def loader():
        calls.append(1)
        raise custom_ops.PluginBuildError('y_plugin', 'ninja not found', 'pip install ninja')
    x = torch.zeros(2)
    assert custom_ops.select_plugin('y', 'ref', x, loader) is None
    assert custom_ops.impl_report() == {'y': 'ref: impl=ref requested'}
    assert custom_ops.select_plugin('y', 'cuda', x, loader) is None
    assert custom_ops.impl_report()['y'] == 'ref: device=cpu' and not calls   # CPU never builds
    # Pretend x is a CUDA tensor to exercise the build-failure branch without a GPU.
    fake_cuda = types.SimpleNamespace(device=torch.device('cuda'), dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match='ninja'):
        assert custom_ops.select_plugin('y', 'cuda', fake_cuda, loader) is None
    assert custom_ops.impl_report()['y'] == 'ref: plugin build failed (ninja not found)'
    assert custom_ops.select_plugin('y', 'cuda', fake_cuda, loader) is None and len(calls) == 1
    plugin = object()
    assert custom_ops.select_plugin('z', 'cuda', fake_cuda, lambda: plugin) is plugin
    assert custom_ops.impl_report()['z'] == 'cuda' and custom_ops.cached_plugin('z') is plugin
    assert custom_ops.impl_summary() == 'y=ref(plugin build failed (ninja not found)) z=cuda'
    bf16 = types.SimpleNamespace(device=torch.device('cuda'), dtype=torch.bfloat16)
    assert custom_ops.select_plugin('z', 'cuda', bf16, lambda: plugin) is None
    assert 'bfloat16' in custom_ops.impl_report()['z']

#----------------------------------------------------------------------------

@pytest.mark.parametrize('log,summary', [
    ('RuntimeError: Ninja is required to load C++ extensions', 'ninja not found'),
    ('OSError: CUDA_HOME environment variable is not set.', 'nvcc not found'),
    ("/bin/sh: 1: /usr/local/cuda/bin/nvcc: not found", 'nvcc not found'),
    ('#error -- unsupported GNU version! gcc versions later than 13 are not supported!', 'host compiler'),
    ("nvcc fatal   : Unsupported gpu architecture 'compute_35'", 'GPU architecture'),
    ('op.cu(12): error: identifier "foo" is undefined', 'compile error: op.cu(12): error'),
])
def test_diagnose_build_error(log, summary):
    got, fix = custom_ops.diagnose_build_error(log)
    assert got.startswith(summary) and fix

#----------------------------------------------------------------------------

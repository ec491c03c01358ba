"""Persistence format and the safe loader: round trips, refusal of embedded code and unknown
globals, numpy.core aliases, the legacy tensor-stream parser, and what our snapshot source imports."""

import ast
import io
import os
import pickle

import numpy as np
import pytest
import torch

import dnnlib
import legacy
from torch_utils import misc
from torch_utils import persistence
from training import networks

#----------------------------------------------------------------------------

def tiny_nets(c_dim=0):
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=3,
        mapping_kwargs=dnnlib.EasyDict(num_layers=2), synthesis_kwargs=dnnlib.EasyDict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
        block_kwargs=dnnlib.EasyDict(freeze_layers=1))
    with torch.no_grad():
        for p in list(G.parameters()) + list(D.parameters()):
            p.normal_()
        G.mapping.w_avg.normal_()
    return G, D

def same_tensors(a, b):
    ta, tb = dict(misc.named_params_and_buffers(a)), dict(misc.named_params_and_buffers(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)

#----------------------------------------------------------------------------
# The pickle structure upstream expects (docs/compatibility.md §4.1).

def test_reduce_uses_upstream_format():
    G, _ = tiny_nets()
    assert persistence.is_persistent(G) and persistence.is_persistent(networks.Generator)
    assert not persistence.is_persistent(torch.nn.Linear(2, 2))
    fn, args, state = G.__reduce_ex__(2)[:3]
    assert fn is persistence._reconstruct_persistent_obj and state is None
    meta = args[0]
    assert meta['type'] == 'class' and meta['version'] == 6 and meta['class_name'] == 'Generator'
    with open(networks.__file__, encoding='utf-8', newline='') as f:
        assert meta['module_src'] == f.read()
    assert meta['state']['_init_kwargs']['synthesis_kwargs'] == dict(channel_base=64, channel_max=8)
    assert isinstance(meta['state']['_init_kwargs']['synthesis_kwargs'], dnnlib.EasyDict)
    assert isinstance(G.init_kwargs, dnnlib.EasyDict) and G.init_kwargs.z_dim == 8

#----------------------------------------------------------------------------
# Round trips: plain pickle (our own source, no exec) and the safe loader (rebuild path).

def test_round_trip_plain_and_safe():
    G, D = tiny_nets(c_dim=3)
    data = dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dict(path='x.zip'),
                asa_plugin=dict(spec='asa', state=dict(t=torch.arange(3.0), a=np.arange(2), n=1.5)))
    blob = pickle.dumps(data)
    plain = pickle.loads(blob)
    safe = legacy.load_network_pkl(io.BytesIO(blob))
    for loaded in (plain, safe):
        assert same_tensors(loaded['G'], G) and same_tensors(loaded['D'], D)
        assert loaded['training_set_kwargs'] == dict(path='x.zip')
    assert safe['asa_plugin']['spec'] == 'asa' and torch.equal(safe['asa_plugin']['state']['t'], torch.arange(3.0))
    assert safe['D'].b8.fromrgb.weight is safe['D'].b8.fromrgb._buffers['weight'] # Frozen layer stays a buffer.
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    assert torch.equal(safe['G_ema'](z, c, noise_mode='const'), G(z, c, noise_mode='const'))

def test_foreign_source_is_rebuilt_not_executed(tmp_path):
    # Same classes, but a module_src that is not ours byte for byte (e.g. upstream's): rebuilt from kwargs.
    G, _ = tiny_nets()
    marker = tmp_path / 'pwned'
    evil_src = f'open({str(marker)!r}, "w").write("x")\nraise SystemExit(3)\n'
    blob = _pickle_with_source(dict(G=G, D=G, G_ema=G), evil_src)
    loaded = legacy.load_network_pkl(io.BytesIO(blob))
    assert isinstance(loaded['G_ema'], networks.Generator) and same_tensors(loaded['G_ema'], G)
    plain = pickle.loads(blob) # Our persistence is safe by default too.
    assert same_tensors(plain['G'], G)
    assert not marker.exists()

def test_loading_does_not_touch_the_callers_rng():
    G, _ = tiny_nets()
    blob = _pickle_with_source(dict(G=G, D=G, G_ema=G), '# not our source\n')
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    legacy.load_network_pkl(io.BytesIO(blob))
    assert torch.equal(torch.rand(3), expected)

def _pickle_with_source(obj, src):
    # Pickle as usual, then swap every embedded module source for `src` by patching meta.
    class P(pickle.Pickler):
        def reducer_override(self, o):
            if persistence.is_persistent(o) and not isinstance(o, type):
                fn, args, state = o.__reduce_ex__(2)[:3]
                meta = dict(args[0], module_src=src)
                return fn, (meta,), state
            return NotImplemented
    f = io.BytesIO()
    P(f).dump(obj)
    return f.getvalue()

#----------------------------------------------------------------------------
# A pickle whose embedded code would run under upstream's loader must be refused and not run.

class _EvilPersistent:
    def __init__(self, src, class_name):
        self.meta = dict(type='class', version=6, module_src=src, class_name=class_name, state={'_init_args': (), '_init_kwargs': {}})
    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)

def test_malicious_module_src_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.delenv(persistence.UNSAFE_ENV_VAR, raising=False)
    marker = tmp_path / 'pwned'
    src = f'open({str(marker)!r}, "w").write("x")\nclass Evil: pass\n'
    blob = pickle.dumps(dict(G=_EvilPersistent(src, 'Evil'), D=None, G_ema=None))
    with pytest.raises(legacy.NetworkPickleError, match='"Evil"') as info:
        legacy.load_network_pkl(io.BytesIO(blob))
    assert '\n' not in str(info.value)
    with pytest.raises(pickle.UnpicklingError, match='Evil'):
        pickle.loads(blob)
    assert not marker.exists()

    # Only the explicit opt-in executes it.
    with pytest.raises(legacy.NetworkPickleError):
        legacy.load_network_pkl(io.BytesIO(blob), allow_unsafe=True) # Runs, then fails validation (not a network).
    assert marker.exists()

def test_unknown_global_is_refused_by_name(tmp_path):
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)
    blob = pickle.dumps(dict(G=Evil()))
    with pytest.raises(legacy.NetworkPickleError, match=r'Refusing global "(posix|os|nt)\.system"'):
        legacy.load_network_pkl(io.BytesIO(blob))
    assert not marker.exists()

def test_truncated_and_garbage_pickles_give_one_line_errors():
    G, D = tiny_nets()
    blob = pickle.dumps(dict(G=G, D=D, G_ema=G))
    for bad in (blob[: len(blob) // 2], b'not a pickle at all', b''):
        with pytest.raises(legacy.NetworkPickleError) as info:
            legacy.load_network_pkl(io.BytesIO(bad))
        assert '\n' not in str(info.value) and 'Cannot load network pickle' in str(info.value)
    with pytest.raises(legacy.NetworkPickleError, match='G_ema'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps(dict(G=G, D=D))))

#----------------------------------------------------------------------------
# numpy.core (NumPy 1 files) and numpy._core (NumPy 2) both load.

def test_numpy_core_alias():
    G, D = tiny_nets()
    blob = pickle.dumps(dict(G=G, D=D, G_ema=G, extra=np.float64(0.25)), protocol=2) # GLOBAL opcodes: names in text.
    assert b'numpy._core.multiarray\nscalar' in blob or b'numpy.core.multiarray\nscalar' in blob
    old = blob.replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n')
    loaded = legacy.load_network_pkl(io.BytesIO(old))
    assert loaded['extra'] == 0.25 and isinstance(loaded['G'].synthesis.b8.torgb.weight_gain, (float, np.floating))
    assert same_tensors(loaded['G'], G)

#----------------------------------------------------------------------------
# Hand-written reader for the legacy torch.save stream inside _load_from_bytes.

def test_legacy_stream_parser_matches_torch_load():
    blobs = []
    class Grab(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ('torch.storage', '_load_from_bytes'):
                return lambda b: (blobs.append(b), legacy.parse_legacy_torch_stream(b))[1]
            return super().find_class(module, name)
    for t in (torch.randn(3, 4), torch.arange(5, dtype=torch.int64), torch.zeros([0]), torch.randn(2).half()):
        out = Grab(io.BytesIO(pickle.dumps(t))).load()
        assert out.dtype == t.dtype and torch.equal(out, t)
    with pytest.raises(pickle.UnpicklingError):
        legacy.parse_legacy_torch_stream(blobs[0][:-3])

#----------------------------------------------------------------------------
# force_fp16 rebuilds with upstream's fp16 settings and keeps every tensor.

def test_force_fp16():
    G, D = tiny_nets()
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(dict(G=G, D=D, G_ema=G))), force_fp16=True)
    assert loaded['G_ema'].init_kwargs.synthesis_kwargs.num_fp16_res == 4 and loaded['D'].init_kwargs.conv_clamp == 256
    assert loaded['G_ema'].synthesis.b8.use_fp16 and same_tensors(loaded['G_ema'], G)

#----------------------------------------------------------------------------
# Our snapshot source is exec'd by upstream's loader: it may import only what upstream has.

def test_snapshot_source_imports_only_upstream_names():
    allowed = {'numpy', 'torch', 'torch_utils.misc', 'torch_utils.persistence', 'torch_utils.ops.conv2d_resample',
               'torch_utils.ops.upfirdn2d', 'torch_utils.ops.bias_act', 'torch_utils.ops.fma'}
    tree = ast.parse(open(networks.__file__, encoding='utf-8').read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, 'relative imports break when upstream execs the source'
            imported |= {f'{node.module}.{alias.name}' for alias in node.names}
    assert imported <= allowed, imported - allowed
    # Only op functions that upstream's modules have, with upstream's keyword names.
    src = open(networks.__file__, encoding='utf-8').read()
    used = {m.split('(')[0] for m in __import__('re').findall(r'\b(?:bias_act|conv2d_resample|upfirdn2d|fma)\.\w+\(', src)}
    assert used <= {'bias_act.bias_act', 'conv2d_resample.conv2d_resample', 'upfirdn2d.setup_filter',
                    'upfirdn2d.upsample2d', 'upfirdn2d.downsample2d', 'fma.fma'}, used

#----------------------------------------------------------------------------
# Import hooks see (and may rewrite) meta before reconstruction.

def test_import_hook_runs():
    seen = []
    def hook(meta):
        seen.append(meta.class_name)
        return meta
    persistence.import_hook(hook)
    try:
        G, _ = tiny_nets()
        pickle.loads(pickle.dumps(G))
    finally:
        persistence._import_hooks.remove(hook)
    assert 'Generator' in seen and 'SynthesisLayer' in seen

#----------------------------------------------------------------------------

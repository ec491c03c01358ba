"""Load StyleGAN2-ADA network pickles (upstream's and ours) without running code from the file.

`load_network_pkl(f)` unpickles with an allow-list of globals (docs/compatibility.md §4.2). Persistent objects
are rebuilt as OUR classes from their stored constructor arguments, and their tensors are copied by
dotted name; the module source embedded in the pickle is never executed. Any other global is
refused with an error naming it. `allow_unsafe=True`, `--allow-unsafe` or the environment variable
STYLEGAN2_ALLOW_UNSAFE_PICKLE=1 switch to upstream's behaviour (plain unpickling, embedded source
exec'd) for files you trust.

CLI: python legacy.py --source=PKL_OR_URL --dest=PKL [--force-fp16=true] [--allow-unsafe]
"""

import collections
import copy
import functools
import io
import os
import pickle
import re
import struct
import warnings
from typing import Any

import click
import numpy as np
import torch

import dnnlib
from torch_utils import misc
from torch_utils import persistence
from torch_utils import safe_tensors
from training import stored_kwargs

#----------------------------------------------------------------------------
# One-line error for anything wrong with a network pickle.

class NetworkPickleError(pickle.UnpicklingError):
    pass

def _source_name(f: Any) -> str:
    return str(getattr(f, 'name', '<stream>'))

#----------------------------------------------------------------------------
# numpy moved numpy.core to numpy._core in 2.0; pickles name either.

def _numpy_core():
    return np._core if hasattr(np, '_core') else np.core # pylint: disable=no-member

#----------------------------------------------------------------------------
# Torch storages inside persistence pickles are `_load_from_bytes(b)` with b a legacy
# (non-zip) torch.save stream. weights_only=True reads it on current torch; the hand-written
# parser below is the fallback for streams that the weights-only unpickler rejects.

_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64, 'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

class _LegacyStreamUnpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict, max_bytes: int):
        super().__init__(f)
        self.storages = storages
        self.max_bytes = max_bytes # A storage cannot hold more bytes than the stream that carries it.

    def find_class(self, module, name):
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise NetworkPickleError(f'Tensor data refers to "{module}.{name}", which is not a storage type')

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage' and isinstance(pid[1], _StorageType)):
            raise NetworkPickleError('Tensor data has an unsupported storage reference')
        _, stype, key, _location, numel = pid[:5]
        if type(numel) is not int or not 0 <= numel * stype.dtype.itemsize <= self.max_bytes:
            raise NetworkPickleError(f'Tensor data declares {numel!r} elements, more than the file holds')
        if key not in self.storages:
            self.storages[key] = torch.empty([int(numel)], dtype=stype.dtype)
        return torch.storage.TypedStorage(wrap_storage=self.storages[key].untyped_storage(), dtype=stype.dtype, _internal=True)

def parse_legacy_torch_stream(b: bytes) -> Any:
    """Read a legacy torch.save stream by hand: magic, protocol, sys_info, object, keys, raw data."""
    f = io.BytesIO(b)
    storages = {}
    header = [_LegacyStreamUnpickler(f, storages, len(b)).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise NetworkPickleError('Tensor data is not a legacy torch.save stream')
    if not header[2].get('little_endian', True):
        raise NetworkPickleError('Tensor data was written on a big-endian machine; not supported')
    result = _LegacyStreamUnpickler(f, storages, len(b)).load()
    keys = _LegacyStreamUnpickler(f, storages, len(b)).load()
    for key in keys:
        (numel,) = struct.unpack('<q', f.read(8))
        dst = storages[key]
        nbytes = numel * dst.element_size()
        raw = f.read(nbytes)
        if numel != dst.numel() or len(raw) != nbytes:
            raise NetworkPickleError('Tensor data is truncated')
        if nbytes > 0:
            dst.view(torch.uint8).copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    return result

def _load_from_bytes(b: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(b), weights_only=True, map_location='cpu')
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError):
        return parse_legacy_torch_stream(b)

#----------------------------------------------------------------------------
# Unknown persistent classes (e.g. StyleGAN3 layers) come back as stubs, so the caller can
# report which class is missing instead of failing deep inside another class's rebuild.

class PersistentStub:
    def __init__(self, class_name: str, state: Any):
        self.class_name = class_name
        self.state = state

# Our own module source: restore directly (exact, no construction). Any other source: keep a stub;
# the top-level objects are rebuilt afterwards from their _init_kwargs and the stub tree's tensors.
# Nothing from module_src is ever executed here.

def _safe_reconstruct(meta: Any) -> Any:
    if not isinstance(meta, dict) or not isinstance(meta.get('class_name'), str) or not isinstance(meta.get('module_src'), str):
        raise NetworkPickleError('Persistent object without the expected meta fields; the pickle is damaged')
    if 'filtered_lrelu' in meta['module_src']:
        raise NetworkPickleError(f'This is a StyleGAN3 pickle (class "{meta["class_name"]}"); only StyleGAN2(-ADA) networks are supported')
    if meta.get('version') != persistence._version or meta.get('type') != 'class':
        raise NetworkPickleError(f'Unsupported persistence format (type {meta.get("type")!r}, version {meta.get("version")!r})')
    _check_stored_arguments(meta['class_name'], meta.get('state'))
    if persistence.is_own_source(meta['module_src']):
        return persistence.reconstruct(meta, allow_exec=False)
    return PersistentStub(meta['class_name'], meta.get('state'))

def _check_stored_arguments(class_name: str, state: Any) -> None:
    # Every constructor argument is checked before anything is built from it (own source or not).
    if not isinstance(state, dict) or '_init_kwargs' not in state:
        return
    try:
        stored_kwargs.check_args(state.get('_init_args'), f'{class_name} positional arguments')
        stored_kwargs.check(state['_init_kwargs'], f'{class_name} argument')
    except ValueError as err:
        raise NetworkPickleError(f'stored network arguments are invalid: {err}') from None

def _rebuild_stubs(data: Any, name: str) -> Any:
    """Rebuild top-level stubs as our classes; unknown classes stay stubs for _validate to report."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, value in data.items():
        if not isinstance(value, PersistentStub):
            continue
        try:
            persistence.find_persistent_class(value.class_name)
        except pickle.UnpicklingError:
            continue
        try:
            out[key] = persistence.rebuild_from_state(value.class_name, value.state)
        except _LOAD_ERRORS as err:
            if key not in ('G', 'D', 'G_ema'): # Only the networks are essential; e.g. generation needs no augment_pipe.
                warnings.warn(f'{name}: {key} could not be rebuilt and was dropped ({err})')
                out[key] = None
                continue
            raise NetworkPickleError(f'Cannot load network pickle "{name}": {key}: {err}') from None
    return out

#----------------------------------------------------------------------------
# TensorFlow StyleGAN2(-ADA) networks pickle as dnnlib.tflib.network.Network objects.

class TFNetworkStub(dnnlib.EasyDict):
    def __setstate__(self, state):
        self.update(state)

def convert_tf_networks(tf_G: TFNetworkStub, tf_D: TFNetworkStub, tf_Gs: TFNetworkStub) -> dict:
    """TF (G, D, Gs) -> dict(G, D, G_ema) of our networks (docs/compatibility.md §4.3)."""
    return dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs))

#----------------------------------------------------------------------------
# TF kwargs reader: records which keys were consumed so that unknown ones can be refused.

class _TFKwargs:
    def __init__(self, tf_net: TFNetworkStub, what: str):
        version = tf_net.get('version', 0)
        if version < 4:
            raise ValueError(f'TensorFlow {what} has pickle version {version}; only StyleGAN2 (4) and StyleGAN2-ADA (5) are supported')
        self.kwargs = dict(tf_net.get('static_kwargs') or {})
        self.used = set()
        self.what = what

    def get(self, tf_name: str, default: Any = None, none: Any = None) -> Any:
        self.used.add(tf_name)
        value = self.kwargs.get(tf_name, default)
        return none if value is None else value

    def check_unknown(self, *ignored: str) -> None:
        unknown = sorted(set(self.kwargs) - self.used - set(ignored))
        if unknown:
            raise ValueError(f'TensorFlow {self.what} has unsupported setting "{unknown[0]}"')

_TF_MAX_DEPTH = 8 # Real TF networks nest components two levels deep; a pickle may build a cycle.

def _tf_variables(tf_net: TFNetworkStub) -> dict:
    # "component/subcomponent/layer/var" -> ndarray, walking the component tree. Only genuine numeric
    # ndarrays are taken: np.asarray on any other object would honour its __array_interface__ (a raw
    # memory address from the file).
    out = {}
    def walk(prefix, net, depth):
        if not isinstance(net, dict) or depth > _TF_MAX_DEPTH:
            raise ValueError(f'component "{prefix or "/"}" is not a network or is nested too deeply')
        for item in net.get('variables') or []:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f'a variable of "{prefix or "/"}" is not a (name, array) pair')
            name, value = item
            if type(value) is not np.ndarray or value.dtype.kind not in 'fiub':
                raise ValueError(f'variable "{prefix + name}" is a {type(value).__name__}, not a numeric numpy array')
            out[prefix + name] = value
        components = net.get('components') or {}
        if not isinstance(components, dict):
            raise ValueError(f'components of "{prefix or "/"}" are not a dict')
        for name, comp in components.items():
            walk(prefix + str(name) + '/', comp, depth + 1)
    walk('', tf_net, 0)
    return out

def _tf_lod_layers(tf_vars: dict, kind: str, img_resolution: int) -> bool:
    # Progressive-growing nets name their RGB layers "<kind>_lod<k>"; rename to "<r>x<r>/<kind>".
    found = False
    for name, value in list(tf_vars.items()):
        m = re.fullmatch(rf'(.*?){kind}_lod(\d+)/(.*)', name)
        if m:
            r = img_resolution // (2 ** int(m.group(2)))
            tf_vars[f'{m.group(1)}{r}x{r}/{kind}/{m.group(3)}'] = value
            found = True
    return found

# Layout conversions: TF dense [in,out] -> [out,in]; TF conv [kh,kw,in,out] -> [out,in,kh,kw];
# transposed convs in TF (Conv0_up, Skip) also need a spatial flip.

def _dense(v):
    return v.transpose()

def _conv(v):
    return v.transpose(3, 2, 0, 1)

def _conv_flipped(v):
    return v[::-1, ::-1].transpose(3, 2, 0, 1)

def _fill_from_tf(module: torch.nn.Module, tf_vars: dict, rule) -> None:
    """Set every tensor of `module` from rule(name) -> ndarray (None = keep, e.g. filters)."""
    with torch.no_grad():
        for name, tensor in misc.named_params_and_buffers(module):
            try:
                value = rule(name)
            except KeyError as err:
                raise ValueError(f'TensorFlow pickle lacks variable {err} needed for {name}') from None
            if value is None:
                continue
            value = torch.from_numpy(np.array(value, dtype=np.float32))
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(f'TensorFlow variable for {name} has shape {tuple(value.shape)}, expected {tuple(tensor.shape)}')
            tensor.copy_(value)

#----------------------------------------------------------------------------
# TF generator -> our Generator.

def convert_tf_generator(tf_G: TFNetworkStub) -> torch.nn.Module:
    kw = _TFKwargs(tf_G, 'generator')
    kwargs = dnnlib.EasyDict(
        z_dim=kw.get('latent_size', 512), c_dim=kw.get('label_size', 0), w_dim=kw.get('dlatent_size', 512),
        img_resolution=kw.get('resolution', 1024), img_channels=kw.get('num_channels', 3),
        mapping_kwargs=dnnlib.EasyDict(
            num_layers=kw.get('mapping_layers', 8), embed_features=kw.get('label_fmaps', None),
            layer_features=kw.get('mapping_fmaps', None), activation=kw.get('mapping_nonlinearity', 'lrelu'),
            lr_multiplier=kw.get('mapping_lrmul', 0.01), w_avg_beta=kw.get('w_avg_beta', 0.995, none=1)),
        synthesis_kwargs=dnnlib.EasyDict(
            channel_base=kw.get('fmap_base', 16384) * 2, channel_max=kw.get('fmap_max', 512),
            num_fp16_res=kw.get('num_fp16_res', 0), conv_clamp=kw.get('conv_clamp', None),
            architecture=kw.get('architecture', 'skip'), resample_filter=kw.get('resample_kernel', [1, 3, 3, 1]),
            use_noise=kw.get('use_noise', True), activation=kw.get('nonlinearity', 'lrelu')),
    )
    kw.check_unknown('truncation_psi', 'truncation_cutoff', 'style_mixing_prob', 'structure')
    tf_vars = _tf_variables(tf_G)
    if _tf_lod_layers(tf_vars, 'ToRGB', kwargs.img_resolution):
        kwargs.synthesis_kwargs.architecture = 'orig'

    stored_kwargs.check(kwargs, 'TensorFlow generator setting')
    from training import networks # pylint: disable=import-outside-toplevel
    G = networks.Generator(**kwargs).eval().requires_grad_(False)
    noise_index = lambda r, conv: int(np.log2(r)) * 2 - 5 + conv # noise0 is b4.conv1; then two per block.

    def rule(name):
        if name.endswith('resample_filter'):
            return None
        if name == 'mapping.w_avg':
            return tf_vars['dlatent_avg']
        m = re.fullmatch(r'mapping\.(embed|fc(\d+))\.(weight|bias)', name)
        if m:
            layer = 'mapping/LabelEmbed' if m.group(1) == 'embed' else f'mapping/Dense{m.group(2)}'
            v = tf_vars[f'{layer}/{m.group(3)}']
            return _dense(v) if m.group(3) == 'weight' else v
        if name == 'synthesis.b4.const':
            return tf_vars['synthesis/4x4/Const/const'][0]
        m = re.fullmatch(r'synthesis\.b(\d+)\.(conv0|conv1|torgb|skip)\.(.+)', name)
        if not m:
            raise ValueError(f'no TensorFlow variable maps to {name}')
        r, layer, var = int(m.group(1)), m.group(2), m.group(3)
        tf_layer = {'conv0': 'Conv0_up', 'conv1': 'Conv1' if r > 4 else 'Conv', 'torgb': 'ToRGB', 'skip': 'Skip'}[layer]
        prefix = f'synthesis/{r}x{r}/{tf_layer}'
        if var == 'noise_const':
            return tf_vars[f'synthesis/noise{noise_index(r, int(layer[-1]))}'][0, 0]
        if var == 'weight':
            return _conv_flipped(tf_vars[prefix + '/weight']) if layer in ('conv0', 'skip') else _conv(tf_vars[prefix + '/weight'])
        if var == 'affine.weight':
            return _dense(tf_vars[prefix + '/mod_weight'])
        if var == 'affine.bias':
            return tf_vars[prefix + '/mod_bias'] + 1 # TF stores it 0-centred.
        return tf_vars[f'{prefix}/{var}'] # bias, noise_strength

    _fill_from_tf(G, tf_vars, rule)
    return G

#----------------------------------------------------------------------------
# TF discriminator -> our Discriminator.

def convert_tf_discriminator(tf_D: TFNetworkStub) -> torch.nn.Module:
    kw = _TFKwargs(tf_D, 'discriminator')
    kwargs = dnnlib.EasyDict(
        c_dim=kw.get('label_size', 0), img_resolution=kw.get('resolution', 1024), img_channels=kw.get('num_channels', 3),
        architecture=kw.get('architecture', 'resnet'), channel_base=kw.get('fmap_base', 16384) * 2,
        channel_max=kw.get('fmap_max', 512), num_fp16_res=kw.get('num_fp16_res', 0), conv_clamp=kw.get('conv_clamp', None),
        cmap_dim=kw.get('mapping_fmaps', None),
        block_kwargs=dnnlib.EasyDict(activation=kw.get('nonlinearity', 'lrelu'),
            resample_filter=kw.get('resample_kernel', [1, 3, 3, 1]), freeze_layers=kw.get('freeze_layers', 0)),
        mapping_kwargs=dnnlib.EasyDict(num_layers=kw.get('mapping_layers', 0), embed_features=kw.get('mapping_fmaps', None),
            layer_features=kw.get('mapping_fmaps', None), activation=kw.get('nonlinearity', 'lrelu'),
            lr_multiplier=kw.get('mapping_lrmul', 0.1)),
        epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=kw.get('mbstd_group_size', None),
            mbstd_num_channels=kw.get('mbstd_num_features', 1), activation=kw.get('nonlinearity', 'lrelu')),
    )
    kw.check_unknown('structure')
    tf_vars = _tf_variables(tf_D)
    if _tf_lod_layers(tf_vars, 'FromRGB', kwargs.img_resolution):
        kwargs.architecture = 'orig'

    stored_kwargs.check(kwargs, 'TensorFlow discriminator setting')
    from training import networks # pylint: disable=import-outside-toplevel
    D = networks.Discriminator(**kwargs).eval().requires_grad_(False)

    def rule(name):
        if name.endswith('resample_filter'):
            return None
        m = re.fullmatch(r'mapping\.(embed|fc(\d+))\.(weight|bias)', name)
        if m:
            layer = 'LabelEmbed' if m.group(1) == 'embed' else f'Mapping{m.group(2)}'
        else:
            m = re.fullmatch(r'b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)', name)
            if not m:
                raise ValueError(f'no TensorFlow variable maps to {name}')
            r, layer_name = int(m.group(1)), m.group(2)
            tf_name = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip',
                       'conv': 'Conv', 'fc': 'Dense0'}.get(layer_name)
            layer = 'Output' if layer_name == 'out' else f'{r}x{r}/{tf_name}'
        v = tf_vars[f'{layer}/{m.group(m.lastindex)}']
        if m.group(m.lastindex) == 'bias':
            return v
        return _dense(v) if v.ndim == 2 else _conv(v)

    _fill_from_tf(D, tf_vars, rule)
    return D

#----------------------------------------------------------------------------
# Protocol <= 2 writes bytes as _codecs.encode(text, 'latin1'); allow exactly that.

def _latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise NetworkPickleError(f'Refusing _codecs.encode with encoding {encoding!r}')
    return text.encode('latin1')

#----------------------------------------------------------------------------
# The allow-list: (module, name) -> object. Everything else is refused.

@functools.lru_cache(maxsize=None)
def _allowed_globals() -> dict:
    core = _numpy_core()
    allowed = {
        ('torch_utils.persistence', '_reconstruct_persistent_obj'): _safe_reconstruct,
        ('dnnlib.util', 'EasyDict'): dnnlib.EasyDict,
        ('dnnlib.tflib.network', 'Network'): TFNetworkStub,
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('__builtin__', 'set'): set,             # Protocol <= 2 spells builtins the Python 2 way.
        ('__builtin__', 'frozenset'): frozenset,
        ('_codecs', 'encode'): _latin1_encode,   # Protocol <= 2 stores bytes this way.
        ('numpy', 'dtype'): np.dtype,
        ('numpy', 'ndarray'): np.ndarray,
        ('torch._utils', '_rebuild_tensor_v2'): safe_tensors.rebuild_tensor_v2,
        ('torch._utils', '_rebuild_parameter'): safe_tensors.rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): safe_tensors.rebuild_parameter_with_state,
        ('torch.storage', '_load_from_bytes'): _load_from_bytes,
    }
    for prefix in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed[(prefix, 'scalar')] = core.multiarray.scalar
        allowed[(prefix, '_reconstruct')] = core.multiarray._reconstruct
    for prefix in ('numpy.core.numeric', 'numpy._core.numeric'): # numpy arrays under pickle protocol 5.
        allowed[(prefix, '_frombuffer')] = core.numeric._frombuffer
    return allowed

class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise NetworkPickleError(f'Refusing global "{module}.{name}": it is not on the allow-list for network pickles; '
                f'if you trust this file, pass allow_unsafe=True / --allow-unsafe or set {persistence.UNSAFE_ENV_VAR}=1')
        return obj

    def persistent_load(self, pid):
        raise NetworkPickleError('Pickle uses persistent ids, which network pickles never do')

#----------------------------------------------------------------------------
# Unsafe path (explicit opt-in only): plain unpickling with embedded source exec'd, as upstream.

class _UnsafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ('dnnlib.tflib.network', 'Network'):
            return TFNetworkStub
        if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
            return lambda meta: persistence.reconstruct(meta, allow_exec=True)
        return super().find_class(module, name)

def unsafe_allowed(allow_unsafe: bool = False) -> bool:
    if allow_unsafe:
        return True
    try:
        return persistence.unsafe_exec_allowed()
    except persistence.UnsafeOptInError as err:
        raise NetworkPickleError(str(err)) from None

#----------------------------------------------------------------------------

# What a hostile or damaged file can make the loading code raise; each becomes one NetworkPickleError.
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                ImportError, RuntimeError, struct.error, UnicodeDecodeError, MemoryError, ArithmeticError, AssertionError)

def _one_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__

def load_network_pkl(f: Any, force_fp16: bool = False, allow_unsafe: bool = False) -> dict:
    """Load a network pickle into {G, D, G_ema, augment_pipe, training_set_kwargs, ...extra keys}.

    Every failure, whatever its cause, is raised as one NetworkPickleError naming the file."""
    name = _source_name(f)
    unpickler_class = _UnsafeUnpickler if unsafe_allowed(allow_unsafe) else _SafeUnpickler
    persistence._import_known_modules() # Register our classes before the first lookup.
    try:
        data = unpickler_class(f).load()
    except NetworkPickleError as err:
        raise NetworkPickleError(f'Cannot load network pickle "{name}": {err}') from None
    except _LOAD_ERRORS as err:
        raise NetworkPickleError(f'Cannot load network pickle "{name}": the file is truncated or corrupt ({type(err).__name__}: {_one_line(err)})') from None

    data = _rebuild_stubs(data, name)

    # TensorFlow (G, D, Gs) tuple.
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, TFNetworkStub) for net in data):
        try:
            data = convert_tf_networks(*data)
        except _LOAD_ERRORS as err:
            raise NetworkPickleError(f'Cannot convert TensorFlow network pickle "{name}": {_one_line(err)}') from None

    data = _validate(data, name)
    if force_fp16:
        try:
            data = _force_fp16(data)
        except _LOAD_ERRORS as err:
            raise NetworkPickleError(f'Cannot rebuild network pickle "{name}" with fp16: {_one_line(err)}') from None
    return data

#----------------------------------------------------------------------------
# Required keys and types, as upstream's legacy.py checks them; extra keys pass through.

def _validate(data: Any, name: str) -> dict:
    if not isinstance(data, dict):
        raise NetworkPickleError(f'Cannot load network pickle "{name}": expected a dict with G, D, G_ema, got {type(data).__name__}')
    data = dict(data)
    data.setdefault('training_set_kwargs', None)
    data.setdefault('augment_pipe', None)
    for key in ['G', 'D', 'G_ema']:
        net = data.get(key)
        if isinstance(net, PersistentStub):
            raise NetworkPickleError(f'Cannot load network pickle "{name}": {key} is class "{net.class_name}", which this codebase does not implement')
        if not isinstance(net, torch.nn.Module):
            present = ', '.join(sorted(str(k) for k in data))
            raise NetworkPickleError(f'Cannot load network pickle "{name}": {key} is missing or not a network (keys: {present})')
    if isinstance(data['augment_pipe'], PersistentStub):
        warnings.warn(f'{name}: augment_pipe ("{data["augment_pipe"].class_name}") is not available here and was dropped')
        data['augment_pipe'] = None
    if not (data['augment_pipe'] is None or isinstance(data['augment_pipe'], torch.nn.Module)):
        raise NetworkPickleError(f'Cannot load network pickle "{name}": augment_pipe is neither a network nor None')
    if not (data['training_set_kwargs'] is None or isinstance(data['training_set_kwargs'], dict)):
        raise NetworkPickleError(f'Cannot load network pickle "{name}": training_set_kwargs is neither a dict nor None')
    return data

#----------------------------------------------------------------------------
# force_fp16: rebuild G, G_ema and D with upstream's fp16 settings and copy every tensor.

_FP16_SETTINGS = dict(num_fp16_res=4, conv_clamp=256)

def _with_fp16(net_key: str, init_kwargs: dict) -> dict:
    kwargs = copy.deepcopy(init_kwargs)
    if net_key == 'D':
        kwargs.update(_FP16_SETTINGS)
    else: # G and G_ema keep these inside synthesis_kwargs
        kwargs['synthesis_kwargs'] = dnnlib.EasyDict(kwargs.get('synthesis_kwargs', {}), **_FP16_SETTINGS)
    return kwargs

def _force_fp16(data: dict) -> dict:
    for net_key in ('G', 'D', 'G_ema'):
        net = data[net_key]
        kwargs = _with_fp16(net_key, net.init_kwargs)
        if kwargs == net.init_kwargs:
            continue # already fp16
        rebuilt = type(net)(**kwargs)
        rebuilt.eval().requires_grad_(False)
        misc.copy_params_and_buffers(net, rebuilt, require_all=True)
        data[net_key] = rebuilt
    return data

#----------------------------------------------------------------------------
# Write a pickle atomically (temp file in the destination folder, fsync, rename).

def save_network_pkl(data: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with dnnlib.util.AtomicFile(path, 'wb') as f:
        pickle.dump(data, f)

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', help='Pickle to convert: TF StyleGAN2 or a PyTorch snapshot (path or URL)', required=True, metavar='PATH')
@click.option('--dest', help='Where to write the converted pickle (must not exist)', required=True, metavar='PATH')
@click.option('--force-fp16', help='Rebuild G/D with fp16 in the 4 highest resolutions (conv_clamp=256)', type=bool, default=False, metavar='BOOL', show_default=True)
@click.option('--allow-unsafe', help='Run code embedded in the pickle (trusted files only)', is_flag=True)
def convert_network_pickle(source, dest, force_fp16, allow_unsafe):
    """Convert a network pickle to a pickle of this codebase's networks.

    \b
    python legacy.py --source=tf-official-model.pkl --dest=converted.pkl
    python legacy.py --source=old-run.pkl --dest=old-run-fp16.pkl --force-fp16=true
    """
    if os.path.exists(dest):
        raise click.ClickException(f'--dest: "{dest}" already exists; choose a new file name')
    print(f'Reading {source}')
    try:
        with dnnlib.util.open_url(source) as f:
            data = load_network_pkl(f, force_fp16=force_fp16, allow_unsafe=allow_unsafe)
    except (OSError, NetworkPickleError) as err:
        raise click.ClickException(f'--source: {err}')
    save_network_pkl(data, dest)
    print(f'Wrote {dest}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    convert_network_pickle()  # arguments come from click

#----------------------------------------------------------------------------

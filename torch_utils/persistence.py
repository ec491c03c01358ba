"""Pickling of network objects in upstream StyleGAN2-ADA's persistence format.

`@persistent_class` records a class's constructor arguments and the full source of its module, and
pickles instances as `_reconstruct_persistent_obj(meta)` with meta = {type: 'class', version: 6,
module_src, class_name, state}. Upstream's loader execs module_src; our loader does not, unless the
user opts in (see `allow_unsafe_exec`), and rebuilds our own classes from `_init_kwargs` instead.
"""

import copy
import io
import os
import pickle
import sys
import types
import uuid
from typing import Any, Callable, Dict

import torch

import dnnlib

#----------------------------------------------------------------------------
# Format constants and module-level registries.

_version = 6                        # Upstream asserts meta['version'] == 6 on load.
_decorators = set()                 # Every class produced by persistent_class.
_by_name: Dict[str, type] = {}      # class_name -> our decorated class, for the safe rebuild.
_import_hooks = []                  # Callables meta -> meta, run before reconstruction.
_module_to_src_dict = {}            # module -> source text
_src_to_module_dict = {}            # source text -> module (our own modules and opted-in execs)

UNSAFE_ENV_VAR = 'STYLEGAN2_ALLOW_UNSAFE_PICKLE'

#----------------------------------------------------------------------------
# Opt-in for upstream's behaviour of executing the module source embedded in a pickle.
# Off by default: a pickle from an untrusted source could run arbitrary code that way.

_allow_unsafe_exec = False

def allow_unsafe_exec(enable: bool = True) -> None:
    global _allow_unsafe_exec
    _allow_unsafe_exec = bool(enable)

_TRUE_WORDS = ('1', 'true', 'yes', 'on')
_FALSE_WORDS = ('', '0', 'false', 'no', 'off')

class UnsafeOptInError(pickle.UnpicklingError):
    """The opt-in variable holds something that is neither an explicit yes nor an explicit no."""

def env_opt_in() -> bool:
    # Only an explicit true value opts in; anything unrecognised is refused rather than guessed,
    # so that e.g. =false or a typo can never switch code execution on.
    value = os.environ.get(UNSAFE_ENV_VAR, '').strip().lower()
    if value in _TRUE_WORDS:
        return True
    if value in _FALSE_WORDS:
        return False
    raise UnsafeOptInError(f'{UNSAFE_ENV_VAR}={os.environ[UNSAFE_ENV_VAR]!r} is not understood; '
                           f'set it to 1 (run code embedded in trusted pickles) or 0 / unset it')

def unsafe_exec_allowed() -> bool:
    return _allow_unsafe_exec or env_opt_in()

#----------------------------------------------------------------------------
# Class decorator: instances remember their constructor arguments and pickle with their module's source.

def persistent_class(orig_class: type) -> type:
    assert isinstance(orig_class, type), 'persistent_class decorates classes'
    if is_persistent(orig_class):
        return orig_class
    assert orig_class.__module__ in sys.modules, f'module of {orig_class.__name__} is not imported'
    home = sys.modules[orig_class.__module__]
    name = orig_class.__name__

    class Persistent(orig_class):
        _orig_module_src = _module_to_src(home)
        _orig_class_name = name

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            assert vars(home).get(name) is not None, 'persistent classes must be defined at module level'
            self._init_args, self._init_kwargs = copy.deepcopy(args), copy.deepcopy(kwargs)
            _check_pickleable((self._init_args, self._init_kwargs))

        init_args = property(lambda self: copy.deepcopy(self._init_args))
        init_kwargs = property(lambda self: dnnlib.EasyDict(copy.deepcopy(self._init_kwargs)))

        def __reduce__(self):
            return _reduce_persistent(self, super().__reduce__())

    for attr in ('__name__', '__qualname__', '__module__', '__doc__'):
        setattr(Persistent, attr, getattr(orig_class, attr))
    _decorators.add(Persistent)
    if not home.__name__.startswith('_imported_module_'): # Only our own code is a rebuild target.
        _by_name.setdefault(name, Persistent)
    return Persistent

# Pickle as _reconstruct_persistent_obj(meta): the usual (callable, args, state, ...) tuple from
# nn.Module's __reduce__ has its first three slots replaced; the state travels inside meta.

def _reduce_persistent(obj: Any, reduced: tuple) -> tuple:
    parts = list(reduced) + [None] * (3 - len(reduced))
    if parts[0] is _reconstruct_persistent_obj:
        return tuple(parts)
    meta = dict(type='class', version=_version, module_src=obj._orig_module_src,
                class_name=obj._orig_class_name, state=parts[2])
    return (_reconstruct_persistent_obj, (meta,), None, *parts[3:])

#----------------------------------------------------------------------------

def is_persistent(obj: Any) -> bool:
    """True for persistent classes and their instances."""
    try:
        if obj in _decorators:
            return True
    except TypeError: # Unhashable objects.
        pass
    return type(obj) in _decorators

#----------------------------------------------------------------------------
# Hooks that may rewrite meta (e.g. patch an old module source) before reconstruction.

def import_hook(hook: Callable[[dict], dict]) -> None:
    assert callable(hook)
    _import_hooks.append(hook)

def run_import_hooks(meta: dict) -> dict:
    meta = dnnlib.EasyDict(meta)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, 'an import hook must return meta'
    return meta

#----------------------------------------------------------------------------
# Called by the unpickler for every persistent object.

def _reconstruct_persistent_obj(meta: dict) -> Any:
    return reconstruct(meta, allow_exec=unsafe_exec_allowed())

def reconstruct(meta: dict, allow_exec: bool = False) -> Any:
    """Rebuild one persistent object; execs embedded source only when allow_exec."""
    if not isinstance(meta, dict) or not {'type', 'version', 'module_src', 'class_name', 'state'} <= set(meta):
        raise pickle.UnpicklingError('Persistent object without the expected meta fields; the pickle is damaged')
    meta = run_import_hooks(meta)
    if meta.type != 'class':
        raise pickle.UnpicklingError(f'Unsupported persistent object type "{meta.type}"')
    if meta.version != _version:
        raise pickle.UnpicklingError(f'Unsupported persistence format version {meta.version} (expected {_version})')

    # Our own module source, byte for byte: nothing from the pickle needs to run.
    module = _src_to_module_dict.get(meta.module_src)
    if module is None and allow_exec:
        module = _src_to_module(meta.module_src)
    if module is not None:
        if not isinstance(module.__dict__.get(meta.class_name), type):
            raise pickle.UnpicklingError(f'Persistent class "{meta.class_name}" is not defined by its module source')
        cls = persistent_class(module.__dict__[meta.class_name])
        obj = cls.__new__(cls)
        if meta.state is None:
            return obj
        if callable(getattr(obj, '__setstate__', None)):
            obj.__setstate__(meta.state)
        else:
            vars(obj).update(meta.state)
        return obj

    # Foreign source (upstream's, or an older version of ours): rebuild our class from its arguments.
    return rebuild_from_state(meta.class_name, meta.state)

#----------------------------------------------------------------------------
# Is this source text one of our own imported modules (so no code from the pickle needs to run)?

def is_own_source(module_src: str) -> bool:
    module = _src_to_module_dict.get(module_src)
    return module is not None and not module.__name__.startswith('_imported_module_')

#----------------------------------------------------------------------------
# Safe reconstruction: construct OUR class from _init_args/_init_kwargs and copy tensors by name.

def find_persistent_class(class_name: str) -> type:
    if class_name not in _by_name:
        _import_known_modules()
    if class_name not in _by_name:
        raise pickle.UnpicklingError(
            f'Pickle contains class "{class_name}", which this codebase does not implement; '
            f'if you trust the file, set {UNSAFE_ENV_VAR}=1 to run the code embedded in it')
    return _by_name[class_name]

def _import_known_modules() -> None:
    # Persistent classes register themselves when their module is imported.
    import importlib
    for name in ('training.networks', 'asa_plugin.augment_pipe'):
        importlib.import_module(name)

def state_tensors(state: dict, prefix: str = '') -> Dict[str, torch.Tensor]:
    """Dotted name -> tensor for the _parameters and _buffers in an nn.Module state dict, recursively."""
    out = {}
    for key in ('_parameters', '_buffers'):
        for name, tensor in (state.get(key) or {}).items():
            if tensor is not None:
                out[prefix + name] = tensor
    for name, child in (state.get('_modules') or {}).items():
        if child is None:
            continue
        child_state = child.__dict__ if isinstance(child, torch.nn.Module) else getattr(child, 'state', child)
        if isinstance(child_state, dict):
            out.update(state_tensors(child_state, prefix + name + '.'))
    return out

class _SkipRandomInit(torch.overrides.TorchFunctionMode):
    # Random initialization is wasted work when all tensors are copied from a pickle right after
    # (require_all below); allocate uninitialized memory instead. Halves load time for big networks.
    _RANDOM_FACTORIES = (torch.randn, torch.rand)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._RANDOM_FACTORIES:
            kwargs.pop('generator', None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)

def rebuild_from_state(class_name: str, state: dict) -> Any:
    cls = find_persistent_class(class_name)
    if not isinstance(state, dict) or '_init_kwargs' not in state:
        raise pickle.UnpicklingError(f'Persistent object "{class_name}" has no _init_kwargs; the pickle is damaged')
    args = state.get('_init_args') or ()
    kwargs = state.get('_init_kwargs') or {}
    try:
        with torch.random.fork_rng(devices=[]), _SkipRandomInit(): # Every tensor is overwritten below.
            obj = cls(*args, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError, ArithmeticError, MemoryError) as err:
        raise pickle.UnpicklingError(f'Cannot rebuild "{class_name}" from its stored arguments ({type(err).__name__}: {err}); '
            f'the network comes from a different StyleGAN version or fork') from None
    src = state_tensors(state)
    dst = dict(obj.named_parameters()) if isinstance(obj, torch.nn.Module) else {}
    if isinstance(obj, torch.nn.Module):
        dst.update(dict(obj.named_buffers()))
    missing = sorted(set(dst) - set(src))
    if missing:
        raise pickle.UnpicklingError(f'"{class_name}" in the pickle lacks tensors {missing[:5]}; it does not match this network definition')
    with torch.no_grad():
        for name, tensor in dst.items():
            s = src[name]
            if tuple(s.shape) != tuple(tensor.shape):
                raise pickle.UnpicklingError(f'"{class_name}.{name}" has shape {tuple(s.shape)} in the pickle, expected {tuple(tensor.shape)}')
            tensor.copy_(s.detach())
            tensor.requires_grad_(isinstance(tensor, torch.nn.Parameter) and s.requires_grad)
    if isinstance(obj, torch.nn.Module):
        obj.train(bool(state.get('training', True)))
    return obj

#----------------------------------------------------------------------------
# Source text of a module, and (opt-in only) a module from source text.

def _module_to_src(module: types.ModuleType) -> str:
    src = _module_to_src_dict.get(module)
    if src is None:
        path = getattr(module, '__file__', None)
        if path is not None and os.path.isfile(path):
            with open(path, 'r', encoding='utf-8', newline='') as f:
                src = f.read()
        else:
            import inspect
            src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict.setdefault(src, module)
    return src

def _src_to_module(src: str) -> types.ModuleType:
    if src in _src_to_module_dict:
        return _src_to_module_dict[src]
    # A fresh, uniquely named module, registered before exec so that persistent_class finds it.
    module = types.ModuleType(f'_imported_module_{uuid.uuid4().hex}')
    sys.modules[module.__name__] = module
    _module_to_src_dict[module], _src_to_module_dict[src] = src, module
    exec(src, vars(module)) # pylint: disable=exec-used
    return module

#----------------------------------------------------------------------------
# Constructor arguments must pickle with stock modules, or the snapshot would not load elsewhere.

def _check_pickleable(obj: Any) -> None:
    # Walk containers; known-good leaves (plain values, numpy/torch objects, persistent objects)
    # are dropped, and whatever is left must survive pickle.dump on its own.
    def leftovers(x):
        if isinstance(x, dict):
            return [leftovers(pair) for pair in x.items()]
        if isinstance(x, (list, tuple, set)):
            return [leftovers(item) for item in x]
        plain = x is None or isinstance(x, (str, int, float, bool, bytes, bytearray))
        library = type(x).__module__.split('.')[0] in ('numpy', 'torch')
        return None if (plain or library or is_persistent(x)) else x
    pickle.dump(leftovers(obj), io.BytesIO())

#----------------------------------------------------------------------------

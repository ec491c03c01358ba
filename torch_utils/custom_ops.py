"""Lazy JIT builds of our CUDA ops, with a cache, a cross-process lock and an explicit fallback policy.

* ``get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs)`` builds (first
  call only; never at import) with ``torch.utils.cpp_extension.load`` and ninja, into a cache folder
  keyed by a hash of the sources, the toolchain and the GPU architecture. Several ranks may call it
  at once: one builds in a temp folder under a file lock and renames it into place; the others wait
  and load the result. It raises ``PluginBuildError`` on failure and never edits ``os.environ``.
* ``select_plugin(op, impl, x, loader)`` is what the ops call: it returns the plugin for CUDA
  tensors, or None (use the reference). A failed build warns once with a summary of the compiler
  error and the likely fix; with ``STYLEGAN_ASA_STRICT_OPS=1`` it raises instead.
* ``impl_report()`` says which implementation each op used last and why, for the training log;
  ``impl_summary()`` is the same as one short line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
import warnings

import torch

#----------------------------------------------------------------------------
# Settings. `verbosity` as upstream: 'none' | 'brief' (one line per plugin) | 'full' (build log).
# `cache_dir` overrides the cache location (tests); otherwise see _cache_root().

verbosity = 'brief'
cache_dir = None
lock_timeout = 900.0                         # seconds to wait for another process's build
STRICT_ENV = 'STYLEGAN_ASA_STRICT_OPS'       # '1' = a failed build raises instead of falling back
KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)

_plugins = dict()       # module_name -> loaded module
_failures = dict()      # module_name -> PluginBuildError (a failed build is not retried)
_op_plugins = dict()    # op name -> module or None (after the first CUDA call)
_report = dict()        # op name -> 'cuda' or 'ref: <reason>'
_warned = set()         # op names already warned about

#----------------------------------------------------------------------------
# Build failure with a one-line summary and the likely fix; `log` keeps the compiler output.

class PluginBuildError(RuntimeError):
    def __init__(self, module_name, summary, fix, log=''):
        self.module_name, self.summary, self.fix, self.log = module_name, summary, fix, log
        super().__init__(f'Could not build plugin "{module_name}": {summary}. Likely fix: {fix}.'
                         + (f'\n{_error_excerpt(log)}' if log else ''))

#----------------------------------------------------------------------------

def strict_mode() -> bool:
    r"""True when ``STYLEGAN_ASA_STRICT_OPS=1``: a failed CUDA build raises instead of falling back."""
    return os.environ.get(STRICT_ENV, '0').strip().lower() in ('1', 'true', 'yes', 'on')

#----------------------------------------------------------------------------

def impl_report() -> dict:
    r"""Which implementation each op used on its latest call.

    Returns:
        dict op name -> ``'cuda'`` or ``'ref: <reason>'`` (e.g. ``'ref: device=cpu'``,
        ``'ref: plugin build failed (nvcc not found)'``). Ops not called yet are absent.
    """
    return dict(sorted(_report.items()))

def impl_summary() -> str:
    r"""``impl_report()`` as one short line for the tick log, e.g. ``bias_act=cuda upfirdn2d=ref(device=cpu)``."""
    parts = []
    for op, used in impl_report().items():
        parts.append(f'{op}=cuda' if used == 'cuda' else f'{op}=ref({used[len("ref: "):]})')
    return ' '.join(parts)

#----------------------------------------------------------------------------

def select_plugin(op_name, impl, x, loader):
    r"""Return the loaded CUDA plugin for ``op_name`` if it should run on ``x``, else None.

    Args:
        op_name: Short op name for the report ('bias_act', 'upfirdn2d').
        impl:    The op's ``impl`` argument: 'cuda' or 'ref'.
        x:       The op's main input; only CUDA tensors of a kernel dtype use the plugin.
        loader:  Zero-argument function that builds/loads the plugin (called once).
    """
    reason = None
    if impl == 'ref':
        reason = 'impl=ref requested'
    elif x.device.type != 'cuda':
        reason = f'device={x.device.type}'
    elif x.dtype not in KERNEL_DTYPES:
        reason = f'dtype={str(x.dtype).replace("torch.", "")} has no kernel'
    if reason is None:
        plugin = _plugin_for_op(op_name, loader)
        if plugin is not None:
            _report[op_name] = 'cuda'
            return plugin
        reason = f'plugin build failed ({_failure_summary(op_name)})'
    _report[op_name] = f'ref: {reason}'
    return None

def cached_plugin(op_name):
    # The plugin select_plugin() returned for this op (used inside autograd functions).
    plugin = _op_plugins.get(op_name)
    if plugin is None:
        raise RuntimeError(f'{op_name}: CUDA plugin used before select_plugin() loaded it')
    return plugin

#----------------------------------------------------------------------------
# Load once per op and apply the failure policy: strict -> raise; otherwise warn once, use ref.

_op_errors = dict()     # op name -> PluginBuildError

def _plugin_for_op(op_name, loader):
    if op_name not in _op_plugins:
        try:
            _op_plugins[op_name] = loader()
        except PluginBuildError as err:
            _op_errors[op_name] = err
            _op_plugins[op_name] = None
    plugin = _op_plugins[op_name]
    if plugin is not None:
        return plugin
    err = _op_errors.setdefault(op_name, PluginBuildError(op_name, 'plugin loader returned nothing', 'report a bug'))
    if strict_mode():                         # checked on every call: strict mode may be set later
        raise err
    if op_name not in _warned:
        _warned.add(op_name)
        warnings.warn(f'Failed to build CUDA kernels for {op_name} ({err.summary}). Likely fix: {err.fix}. '
                      f'Falling back to the slow reference implementation; set {STRICT_ENV}=1 to make this an '
                      f'error.\n{_error_excerpt(err.log)}', RuntimeWarning, stacklevel=4)
    return None

def _failure_summary(op_name):
    err = _op_errors.get(op_name)
    return err.summary if err is not None else 'unknown error'

#----------------------------------------------------------------------------

def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    r"""Build (once, cached on disk) and import a C++/CUDA extension module.

    Args:
        module_name:  Python module name of the extension (``PYBIND11_MODULE`` uses it).
        sources:      .cpp/.cu files, relative to ``source_dir`` if given.
        headers:      Extra files the sources include (part of the cache key and copied along).
        source_dir:   Folder of the sources and headers.
        build_kwargs: Passed to ``torch.utils.cpp_extension.load`` (e.g. ``extra_cuda_cflags``).

    Returns:
        The imported module. Raises ``PluginBuildError`` (with a summary and a fix) on failure.
    """
    if module_name in _plugins:
        return _plugins[module_name]
    if module_name in _failures:
        raise _failures[module_name]
    _status(f'Setting up PyTorch plugin "{module_name}"... ', end='')
    try:
        module = _build_or_load(module_name, sources, headers or [], source_dir, build_kwargs)
    except PluginBuildError as err:
        _status('Failed!')
        _failures[module_name] = err
        raise
    _status('Done.')
    _plugins[module_name] = module
    return module

def _status(msg, end='\n'):
    if verbosity in ('brief', 'full'):
        print(msg, end=end, flush=True)

#----------------------------------------------------------------------------
# Cache location: $TORCH_EXTENSIONS_DIR (read, never set) or ~/.cache/stylegan2_asa/torch_extensions.

def _cache_root():
    if cache_dir is not None:
        return cache_dir
    if os.environ.get('TORCH_EXTENSIONS_DIR'):
        return os.environ['TORCH_EXTENSIONS_DIR']
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'stylegan2_asa', 'torch_extensions')

#----------------------------------------------------------------------------
# GPU architecture of the current device ('sm_90'), or the user's TORCH_CUDA_ARCH_LIST if set.

def _gpu_arch():
    if os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return 'list-' + re.sub(r'[^0-9A-Za-z.+]+', '_', os.environ['TORCH_CUDA_ARCH_LIST'])
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f'sm_{major}{minor}'
    return 'nogpu'

def _arch_flags(arch):
    # Build for the current GPU only (fast, small); the cache key carries the arch.
    if not arch.startswith('sm_'):
        return []
    cc = arch[3:]
    return [f'-gencode=arch=compute_{cc},code=[sm_{cc},compute_{cc}]']

#----------------------------------------------------------------------------
# Cache key: everything that changes the binary. Same sources + toolchain + arch = same folder.

def cache_key(module_name, files, build_kwargs, arch):
    h = hashlib.sha256()
    meta = [module_name, arch, torch.__version__, str(torch.version.cuda), sys.version.split()[0],
            sys.platform, repr(sorted((k, repr(v)) for k, v in build_kwargs.items()))]
    h.update('\0'.join(meta).encode())
    for path in files:
        h.update(b'\0' + os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as fp:
            h.update(fp.read())
    return h.hexdigest()[:20]

#----------------------------------------------------------------------------
# Build under the lock into a temp folder, then rename it into place (readers never see a
# half-written folder). A finished folder holds a BUILD_OK marker.

def _build_or_load(module_name, sources, headers, source_dir, build_kwargs):
    def resolve(p):
        return os.path.join(source_dir, p) if source_dir else p
    sources = [resolve(p) for p in sources]
    files = sources + [resolve(p) for p in headers]
    for path in files:
        if not os.path.isfile(path):
            raise PluginBuildError(module_name, f'source file {path} not found', 'reinstall the repository files')
    arch = _gpu_arch()
    root = _cache_root()
    final = os.path.join(root, f'{module_name}-{cache_key(module_name, files, build_kwargs, arch)}-{arch}')
    if os.path.isfile(os.path.join(final, 'BUILD_OK')):
        return _import_built(module_name, final)
    os.makedirs(root, exist_ok=True)
    with file_lock(final + '.lock', timeout=lock_timeout, module_name=module_name):
        if os.path.isfile(os.path.join(final, 'BUILD_OK')):
            return _import_built(module_name, final)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(final) + '.tmp-', dir=root)
        try:
            for path in files:
                shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
            module = _run_build(module_name, [os.path.join(tmp, os.path.basename(p)) for p in sources],
                                tmp, build_kwargs, arch)
            with open(os.path.join(tmp, 'BUILD_OK'), 'w', encoding='utf-8') as fp:
                fp.write(f'{module_name} {arch} {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
            if os.path.isdir(final):            # leftover without marker from a killed build
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return module

#----------------------------------------------------------------------------
# The actual JIT build (cpp_extension is imported here, not at module import: it is slow).

def _run_build(module_name, sources, build_dir, build_kwargs, arch):
    from torch.utils import cpp_extension  # pylint: disable=import-outside-toplevel
    kwargs = dict(build_kwargs)
    cuda_flags = list(kwargs.pop('extra_cuda_cflags', []))
    if not any('arch' in flag for flag in cuda_flags):
        cuda_flags += _arch_flags(arch)
    cuda_flags += ['--allow-unsupported-compiler']
    try:
        return cpp_extension.load(name=module_name, sources=sources, build_directory=build_dir,
                                  extra_cuda_cflags=cuda_flags, verbose=(verbosity == 'full'), **kwargs)
    except Exception as err:  # cpp_extension raises RuntimeError, OSError, CalledProcessError, ...
        log = f'{type(err).__name__}: {err}'
        summary, fix = diagnose_build_error(log)
        raise PluginBuildError(module_name, summary, fix, log) from err

#----------------------------------------------------------------------------
# Load a finished build folder without ninja (fast path for every process but the builder).

def _import_built(module_name, folder):
    candidates = [n for n in os.listdir(folder) if n.startswith(module_name) and n.endswith(('.so', '.pyd'))]
    if not candidates:
        raise PluginBuildError(module_name, f'{folder} has no compiled module',
                               f'delete {folder} to force a rebuild')
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(folder, candidates[0]))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        raise PluginBuildError(module_name, f'cached module does not load ({err})',
                               f'delete {folder} to force a rebuild') from err
    return module

#----------------------------------------------------------------------------
# Known failure signatures -> (summary, fix). First match wins; the fallback quotes the first
# compiler error line.

_DIAGNOSES = [
    (r'Ninja is required|ninja: not found|No such file or directory: .ninja',
     'ninja not found', 'pip install ninja'),
    (r'CUDA_HOME|nvcc: not found|No such file or directory: \S*nvcc|nvcc\S*: command not found',
     'nvcc not found', 'install the CUDA toolkit that matches torch.version.cuda and set CUDA_HOME '
     '(or put its bin/ with nvcc on PATH)'),
    (r'unsupported GNU version|unsupported clang version|unsupported (host )?compiler',
     'host compiler not supported by this nvcc', 'install a gcc/g++ that this CUDA version supports and '
     'point CC/CXX at it (or NVCC_CCBIN for nvcc)'),
    (r'[Uu]nsupported gpu architecture|no kernel image is available|invalid device function',
     'GPU architecture not supported by this nvcc', 'use a CUDA toolkit that supports this GPU, or set '
     'TORCH_CUDA_ARCH_LIST to an architecture it supports'),
    (r'Python\.h: No such file', 'Python headers missing', 'install the python3-dev package for your Python'),
    (r'cannot find -l\S+', 'link failed: library not found', 'install a CUDA build of PyTorch (torch.version.cuda '
     'is set) and the matching CUDA toolkit'),
    (r'Timed out waiting for', 'timed out waiting for another build', 'if no other process is building, delete '
     'the .lock file named in the message'),
]

def diagnose_build_error(log):
    for pattern, summary, fix in _DIAGNOSES:
        if re.search(pattern, log):
            return summary, fix
    errors = _compiler_errors(log)
    return (f'compile error: {errors[0][:200]}' if errors else 'build error'), \
        'fix the source (see the compiler error), or run with custom_ops.verbosity="full" for the full log'

def _compiler_errors(log):
    # Compiler diagnostics ("file:line:col: error: ...", "file(line): error: ...", "nvcc fatal"),
    # with folders stripped and duplicates dropped.
    found = []
    for line in log.splitlines():
        if re.search(r'(\berror\b|\bfatal\b)\s*:?', line, re.I) and not line.lstrip().startswith(('RuntimeError', 'FAILED')):
            line = re.sub(r'\S*/([^/\s]+\.(?:cpp|cu|h|cuh|o)\b)', r'\1', line.strip())
            if line not in found:
                found.append(line)
    return found

def _error_excerpt(log, max_lines=8):
    # The compiler's own error lines (or the tail of the log), for the one warning we print.
    lines = _compiler_errors(log) or [line.rstrip() for line in log.splitlines() if line.strip()][-max_lines:]
    return '\n'.join('    ' + line[:300] for line in lines[:max_lines])

#----------------------------------------------------------------------------
# Cross-process exclusive lock on a file. flock is released by the kernel when the holder dies,
# so a crashed build cannot leave a stale lock behind (NFS aside; see docs/ops.md).

@contextlib.contextmanager
def file_lock(path, timeout=900.0, module_name='plugin', poll=0.5):
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
    except ImportError:
        fcntl = None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.time()
        announced = False
        while True:
            if _try_lock(fcntl, fd, path):
                break
            if not announced:
                _status(f'\n  waiting for another process to build "{module_name}" (lock {path})... ', end='')
                announced = True
            if time.time() - start > timeout:
                raise PluginBuildError(module_name, f'Timed out waiting for {path}',
                                       f'if no other process is building, delete {path}')
            time.sleep(poll)
        yield
    finally:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

def _try_lock(fcntl, fd, path):
    if fcntl is None:                             # Windows: no flock; use msvcrt's byte-range lock.
        import msvcrt  # pylint: disable=import-outside-toplevel,import-error
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False

#----------------------------------------------------------------------------

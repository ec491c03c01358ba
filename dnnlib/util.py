"""Generic helpers with upstream StyleGAN2-ADA's names: EasyDict, objects by dotted name,
cache folders, time formatting, a stdout/stderr tee and `open_url` for local files and downloads.
Pickles name `dnnlib.util.EasyDict`, and configs name classes by dotted path, so these names are frozen."""

import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.parse
from typing import Any, Optional

import numpy as np

#----------------------------------------------------------------------------
# A dict whose keys can also be read and written as attributes (config objects, pickled in snapshots).

class EasyDict(dict):
    def __getattr__(self, name: str) -> Any:
        # Dunder names are never keys: numpy, copy and pickle probe objects for __array_interface__,
        # __deepcopy__ and friends, and a key from a hostile pickle must not answer them.
        if name in self and not (name.startswith('__') and name.endswith('__')):
            return self[name]
        raise AttributeError(f'{type(self).__name__} has no key {name!r}')

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

#----------------------------------------------------------------------------
# Tee for stdout/stderr into an optional log file; used by train.py for log.txt.
# close() puts the original streams back only if they still point at this logger (nesting).

class Logger(object):
    def __init__(self, file_name: Optional[str] = None, file_mode: str = 'w', should_flush: bool = True):
        self.file = None if file_name is None else open(file_name, file_mode)
        self.should_flush = should_flush
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self

    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _sinks(self) -> list:
        return [self.stdout] if self.file is None else [self.file, self.stdout]

    def write(self, text: str) -> None:
        text = text.decode() if isinstance(text, bytes) else text
        if not text: # Some callers write empty strings to probe the stream.
            return
        for sink in self._sinks():
            sink.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        for sink in self._sinks():
            sink.flush()

    def close(self) -> None:
        self.flush()
        sys.stdout = self.stdout if sys.stdout is self else sys.stdout
        sys.stderr = self.stderr if sys.stderr is self else sys.stderr
        log, self.file = self.file, None
        if log is not None:
            log.close()

#----------------------------------------------------------------------------
# Where downloads and other caches live: set_cache_dir() > $DNNLIB_CACHE_DIR > ~/.cache/dnnlib
# (HOME, then USERPROFILE on Windows, then the temp folder).

_dnnlib_cache_dir = None

def set_cache_dir(path: Optional[str]) -> None:
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path

def _cache_root() -> str:
    if _dnnlib_cache_dir is not None:
        return _dnnlib_cache_dir
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.environ['DNNLIB_CACHE_DIR']
    home = next((os.environ[v] for v in ('HOME', 'USERPROFILE') if v in os.environ), None)
    return os.path.join(tempfile.gettempdir() if home is None else home, '.cache', 'dnnlib')

def make_cache_dir_path(*paths: str) -> str:
    return os.path.join(_cache_root(), *paths)

#----------------------------------------------------------------------------
# Human-readable durations in upstream's format: "42s", "3m 05s", "2h 01m 07s", "3d 04h 05m".

def format_time(seconds: float) -> str:
    s = int(np.rint(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'

#----------------------------------------------------------------------------
# Yes/no strings from the command line (replaces distutils.util.strtobool, gone in Python 3.12).

def ask_yes_no(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ('y', 'yes', 't', 'true', 'on', '1'):
        return True
    if v in ('n', 'no', 'f', 'false', 'off', '0'):
        return False
    raise ValueError(f'Invalid boolean "{value}": use true/false, yes/no or 1/0')

#----------------------------------------------------------------------------
# Dotted names -> objects. The longest importable module prefix wins, so that
# "training.networks.Generator" resolves to the class, not to a package attribute chain.

_SHORTHANDS = {'np': 'numpy', 'tf': 'tensorflow'}

def _expand_shorthand(obj_name: str) -> str:
    head, sep, tail = obj_name.partition('.')
    if sep and head in _SHORTHANDS:
        return _SHORTHANDS[head] + '.' + tail
    return obj_name

def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    obj = module
    for part in filter(None, obj_name.split('.')):
        obj = getattr(obj, part)
    return obj

def get_module_from_obj_name(obj_name: str) -> tuple:
    """Return (module, remaining attribute path) for a dotted name, longest module prefix first."""
    obj_name = _expand_shorthand(obj_name)
    parts = obj_name.split('.')
    candidates = [('.'.join(parts[:i]), '.'.join(parts[i:])) for i in range(len(parts), 0, -1)]

    # Prefer a prefix that imports and has the remaining attribute path.
    for module_name, local_name in candidates:
        try:
            module = importlib.import_module(module_name)
            get_obj_from_module(module, local_name)
            return module, local_name
        except (ImportError, AttributeError):
            pass

    # Nothing resolved: re-raise a genuine import error from inside a module if there is one,
    # so that a broken dependency is not reported as "name not found".
    for module_name, _ in candidates:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            missing = getattr(err, 'name', None)
            if missing is not None and not module_name.startswith(missing):
                raise
    raise ImportError(f'Cannot find "{obj_name}": no importable module prefix has that attribute path')

def get_obj_by_name(name: str) -> Any:
    return get_obj_from_module(*get_module_from_obj_name(name))

def call_func_by_name(*args: Any, func_name: Optional[str] = None, **kwargs: Any) -> Any:
    assert func_name is not None, 'call_func_by_name needs func_name'
    target = get_obj_by_name(func_name)
    if not callable(target):
        raise TypeError(f'"{func_name}" is not callable')
    return target(*args, **kwargs)

def construct_class_by_name(*args: Any, class_name: Optional[str] = None, **kwargs: Any) -> Any:
    return call_func_by_name(*args, func_name=class_name, **kwargs)

def get_module_dir_by_obj_name(obj_name: str) -> str:
    return os.path.dirname(os.path.abspath(get_module_from_obj_name(obj_name)[0].__file__))

def is_top_level_function(obj: Any) -> bool:
    if not callable(obj):
        return False
    return vars(sys.modules[obj.__module__]).get(obj.__name__) is not None

def get_top_level_function_name(obj: Any) -> str:
    """'module.function' for a module-level function; a script run as __main__ is named after its file."""
    assert is_top_level_function(obj), f'{obj!r} is not a module-level function'
    mod = obj.__module__
    if mod == '__main__':
        mod = os.path.splitext(os.path.basename(sys.modules['__main__'].__file__))[0]
    return f'{mod}.{obj.__name__}'

#----------------------------------------------------------------------------
# The process umask, read once at import (os.umask can only be read by setting it); files made by
# mkstemp are private (0600), so finished files are given the mode a plain open() would give.

_UMASK = os.umask(0o022)
os.umask(_UMASK)

def umask_mode(mode: int) -> int:
    return mode & ~_UMASK

#----------------------------------------------------------------------------
# fsync a folder so that a rename inside it survives a power loss; a no-op where folders cannot be opened.

def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

#----------------------------------------------------------------------------
# The `with` protocol of AtomicFile and AtomicFolder: commit() when the block succeeds, abort() when it raises.

class _CommitOnExit:
    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

#----------------------------------------------------------------------------
# One atomic file write: a temp file in the destination folder, fsync, os.replace, fsync of the folder,
# so a kill at any instant leaves the old file or the new one under `path`, never a torn one.
# Use as `with AtomicFile(path, 'wb') as f:` (commits on success, removes the temp file on error),
# or call commit()/abort() when the writer outlives one block (dataset_tool's zip writer).

class AtomicFile(_CommitOnExit):
    def __init__(self, path: str, mode: str = 'wb', encoding: Optional[str] = None, newline: Optional[str] = None,
                 file_mode: Optional[int] = None):
        assert 'w' in mode and '+' not in mode, f'AtomicFile: mode must be a write mode, got {mode!r}'
        self.path = path
        self.folder = os.path.dirname(os.path.abspath(path))
        self.file_mode = umask_mode(0o666) if file_mode is None else file_mode
        fd, self.tmp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=self.folder)
        try:
            self.file = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            os.remove(self.tmp_path)
            raise

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp_path, self.file_mode)
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.folder)

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.remove(self.tmp_path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.file

#----------------------------------------------------------------------------
# The same for a whole folder: filled under a temp name next to `path` (self.tmp_path), then renamed
# into place by commit(); `path` must not exist or be an empty folder. Readers never see half of it.

class AtomicFolder(_CommitOnExit):
    def __init__(self, path: str):
        self.path = path
        self.parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(self.parent, exist_ok=True)
        self.tmp_path = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=self.parent)

    def commit(self) -> None:
        try:
            if os.path.isdir(self.path):
                os.rmdir(self.path)  # Only an empty folder; rmdir refuses anything else.
            os.chmod(self.tmp_path, umask_mode(0o777))  # mkdtemp makes it private.
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.parent)

    def abort(self) -> None:
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def __enter__(self) -> str:
        return self.tmp_path

#----------------------------------------------------------------------------
# Whole-file writes through AtomicFile.

def atomic_write_bytes(path: str, data: bytes) -> None:
    with AtomicFile(path, 'wb') as f:
        f.write(data)

def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))

#----------------------------------------------------------------------------
# Can an output folder be created (or written) here? Checked before slow work, so that a bad
# --outdir fails at once. Returns None when it can, else the reason, naming the blocking path.

def output_folder_problem(path: str):
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        return f'{probe} is not a writable folder'
    return None

#----------------------------------------------------------------------------
# Append one line to a log (JSON lines) with a single O_APPEND write() and an fsync: a kill cannot
# interleave or half-write it, and rewriting the file per line would cost O(file size). A last line
# torn by a power loss is closed with a newline first so that later lines stay parseable.

def append_line(path: str, line: str) -> None:
    data = line.rstrip('\n').encode('utf-8') + b'\n'
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size > 0:
            with open(path, 'rb') as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b'\n':
                    data = b'\n' + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)

#----------------------------------------------------------------------------
# sha256 (hex) of a file, read in 1 MiB chunks.

def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()

#----------------------------------------------------------------------------
# open_url: local paths, file:// URLs and http(s) downloads with a cache.

class OpenURLError(OSError):
    """A URL or path could not be opened; the message is one line naming it and the fix."""

def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    if not isinstance(obj, str) or '://' not in obj:
        return False
    scheme = urllib.parse.urlparse(obj).scheme
    return scheme in ('http', 'https') or (allow_file_urls and scheme == 'file')

def _local_path(url: str) -> Optional[str]:
    """The filesystem path for a plain path or a file:// URL; None for remote URLs."""
    if '://' not in url:
        return url
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != 'file':
        return None
    path = urllib.parse.unquote(parsed.path)
    if os.name == 'nt' and re.match(r'^/[A-Za-z]:', path): # file:///C:/...
        path = path[1:]
    return path

def _cache_file_name(url: str) -> str:
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    base = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    safe = re.sub(r'[^0-9A-Za-z_.-]', '_', base)[:64]
    return f'{url_md5}_{safe}'

def _offline_hint(url: str) -> str:
    return f'download it elsewhere and pass the local file path instead of "{url}"'

def _recorded_sha256(path: str) -> Optional[str]:
    try:
        with open(path + '.sha256', 'r', encoding='utf-8') as f:
            return f.read().split()[0].lower()
    except (OSError, IndexError):
        return None

def _record_sha256(path: str, digest: str) -> None:
    atomic_write_text(path + '.sha256', f'{digest}  {os.path.basename(path)}\n')

def _checked_cache_entry(url: str, cache_file: str, sha256: Optional[str]) -> Optional[str]:
    """The cached file if it may be reused: it matches `sha256` when given, and always the digest recorded
    when it was downloaded (trust on first use: a file changed since is refused, never used)."""
    actual = sha256_file(cache_file)
    if sha256 is not None and actual != sha256.lower():
        return None # Download again; the new file replaces it only once it verifies.
    recorded = _recorded_sha256(cache_file)
    if recorded is None:
        _record_sha256(cache_file, actual) # Cached by an older version, or killed before its record.
    elif recorded != actual:
        raise OpenURLError(f'Cached download of "{url}" ({cache_file}) changed since it was downloaded (sha256 {actual}, '
                           f'recorded {recorded}); delete it to download it again')
    return cache_file

def open_url(url: str, cache_dir: Optional[str] = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, sha256: Optional[str] = None,
             max_bytes: Optional[int] = None, deadline_s: Optional[float] = None) -> Any:
    """Open a local path, file:// URL or http(s) URL for binary reading (or return its file name).

    Downloads go into `cache_dir` (default: make_cache_dir_path('downloads')) via a temp file and an
    atomic rename, so an interrupted download never leaves a partial cache entry. `sha256` (hex) is
    checked before anything is cached; every cached file also gets a `.sha256` record that is checked
    whenever it is reused. `max_bytes` and `deadline_s` cap the size and duration (defaults and
    environment overrides in dnnlib/download.py).
    """
    from dnnlib import download # pylint: disable=import-outside-toplevel
    if not isinstance(url, str) or url == '':
        raise OpenURLError(f'Invalid path or URL {url!r}: expected a non-empty string')

    # Local files.
    path = _local_path(url)
    if path is not None:
        if not os.path.isfile(path):
            raise OpenURLError(f'Cannot open "{url}": no such file')
        if sha256 is not None and sha256_file(path).lower() != sha256.lower():
            raise OpenURLError(f'File "{url}" does not match the expected sha256 {sha256}')
        return path if return_filename else open(path, 'rb')
    if not is_url(url):
        raise OpenURLError(f'Cannot open "{url}": only local paths, file:// and http(s):// URLs are supported')

    # Cached download?
    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    cache_file = os.path.join(cache_dir, _cache_file_name(url))
    if cache and os.path.isfile(cache_file) and _checked_cache_entry(url, cache_file, sha256):
        return cache_file if return_filename else open(cache_file, 'rb')

    # Download into the cache folder (or a temp folder when not caching).
    fetch = lambda dst: download.download(url, dst, num_attempts, verbose, sha256, max_bytes, deadline_s, _offline_hint(url))
    if not cache:
        if return_filename:
            raise OpenURLError(f'open_url("{url}", return_filename=True) needs cache=True')
        dst_dir = tempfile.mkdtemp(prefix='dnnlib-')
        try:
            tmp_path = os.path.join(dst_dir, 'download')
            fetch(tmp_path)
            with open(tmp_path, 'rb') as f:
                data = f.read()
        finally:
            shutil.rmtree(dst_dir, ignore_errors=True)
        import io
        return io.BytesIO(data)
    _record_sha256(cache_file, fetch(cache_file))
    return cache_file if return_filename else open(cache_file, 'rb')

#----------------------------------------------------------------------------

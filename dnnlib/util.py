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
import time
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

def _progress(verbose: bool, url: str, nbytes: int, total: Optional[int], done: bool = False) -> None:
    if not verbose:
        return
    mb = nbytes / (1 << 20)
    line = f'Downloading {url} ... {mb:.1f} MB' + (f' / {total / (1 << 20):.1f} MB' if total else '')
    print('\r' + line + (' done\n' if done else ''), end='', file=sys.stderr, flush=True)

def _download_to(url: str, dst_path: str, num_attempts: int, verbose: bool, sha256: Optional[str], max_bytes: Optional[int]) -> None:
    """Stream `url` into `dst_path` atomically; nothing is written there unless the download is complete and verified."""
    import requests # Imported lazily: only downloads need it.
    os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
    last_err = None
    for attempt in range(max(int(num_attempts), 1)):
        try:
            with requests.get(url, stream=True, timeout=(10, 60), allow_redirects=True) as res:
                if 400 <= res.status_code < 500:
                    # Client errors (404, 403, ...) do not heal by retrying.
                    raise OpenURLError(f'Cannot download "{url}": HTTP {res.status_code}; check the URL or {_offline_hint(url)}')
                res.raise_for_status()
                total = int(res.headers.get('Content-Length') or 0) or None
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise OpenURLError(f'Cannot download "{url}": {total} bytes exceeds the limit of {max_bytes} bytes')
                h = hashlib.sha256()
                nbytes = 0
                with AtomicFile(dst_path, 'wb') as f:
                    for chunk in res.iter_content(chunk_size=1 << 20):
                        nbytes += len(chunk)
                        if max_bytes is not None and nbytes > max_bytes:
                            raise OpenURLError(f'Cannot download "{url}": more than the limit of {max_bytes} bytes')
                        h.update(chunk)
                        f.write(chunk)
                        _progress(verbose, url, nbytes, total)
                    _progress(verbose, url, nbytes, total, done=True)
                    if sha256 is not None and h.hexdigest().lower() != sha256.lower():
                        raise OpenURLError(f'Download of "{url}" has sha256 {h.hexdigest()}, expected {sha256}; nothing was cached')
            return
        except OpenURLError:
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.HTTPError,
                requests.exceptions.ChunkedEncodingError) as err:
            last_err = err
            # Unreachable hosts (offline, DNS failure, refused) fail fast; timeouts and 5xx are retried.
            refused = isinstance(err, requests.exceptions.ConnectionError) and not isinstance(err, requests.exceptions.Timeout) \
                and any(s in str(err) for s in ('NameResolution', 'Name or service', 'refused', 'No route', 'unreachable', 'getaddrinfo'))
            if refused or attempt + 1 >= num_attempts:
                break
            time.sleep(min(0.5 * (attempt + 1), 5.0))
    reason = type(last_err).__name__ if last_err is not None else 'unknown error'
    raise OpenURLError(f'Cannot download "{url}" ({reason}); check your connection or {_offline_hint(url)}')

def open_url(url: str, cache_dir: Optional[str] = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, sha256: Optional[str] = None,
             max_bytes: Optional[int] = None) -> Any:
    """Open a local path, file:// URL or http(s) URL for binary reading (or return its file name).

    Downloads go into `cache_dir` (default: make_cache_dir_path('downloads')) via a temp file and an
    atomic rename, so an interrupted download never leaves a partial cache entry. `sha256` (hex) is
    checked before anything is cached; `max_bytes` caps the download size.
    """
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
    if cache and os.path.isfile(cache_file):
        if sha256 is None or sha256_file(cache_file).lower() == sha256.lower():
            return cache_file if return_filename else open(cache_file, 'rb')

    # Download into the cache folder (or a temp folder when not caching).
    if not cache:
        if return_filename:
            raise OpenURLError(f'open_url("{url}", return_filename=True) needs cache=True')
        dst_dir = tempfile.mkdtemp(prefix='dnnlib-')
        try:
            tmp_path = os.path.join(dst_dir, 'download')
            _download_to(url, tmp_path, num_attempts, verbose, sha256, max_bytes)
            with open(tmp_path, 'rb') as f:
                data = f.read()
        finally:
            shutil.rmtree(dst_dir, ignore_errors=True)
        import io
        return io.BytesIO(data)
    _download_to(url, cache_file, num_attempts, verbose, sha256, max_bytes)
    return cache_file if return_filename else open(cache_file, 'rb')

#----------------------------------------------------------------------------

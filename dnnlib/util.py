"""Generic helpers with upstream StyleGAN2-ADA's names: EasyDict, objects by dotted name,
cache folders, time formatting, a stdout/stderr tee and `open_url` for local files and downloads.
Pickles name `dnnlib.util.EasyDict`, and configs name classes by dotted path, so these names are frozen."""

import hashlib
import importlib
import os
import re
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
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

#----------------------------------------------------------------------------
# Tee for stdout/stderr into an optional log file; used by train.py for log.txt.

class Logger(object):
    def __init__(self, file_name: Optional[str] = None, file_mode: str = 'w', should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def write(self, text: str) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0: # Some callers write empty strings to probe the stream.
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def close(self) -> None:
        self.flush()
        # Restore the streams only if they still point at us (nested loggers).
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None

#----------------------------------------------------------------------------
# Where downloads and other caches live: set_cache_dir() > $DNNLIB_CACHE_DIR > ~/.cache/dnnlib.

_dnnlib_cache_dir = None

def set_cache_dir(path: Optional[str]) -> None:
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path

def make_cache_dir_path(*paths: str) -> str:
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    if 'HOME' in os.environ:
        return os.path.join(os.environ['HOME'], '.cache', 'dnnlib', *paths)
    if 'USERPROFILE' in os.environ:
        return os.path.join(os.environ['USERPROFILE'], '.cache', 'dnnlib', *paths)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *paths)

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
    if obj_name != '':
        for part in obj_name.split('.'):
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
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)

def call_func_by_name(*args: Any, func_name: Optional[str] = None, **kwargs: Any) -> Any:
    assert func_name is not None, 'call_func_by_name needs func_name'
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f'"{func_name}" is not callable')
    return func_obj(*args, **kwargs)

def construct_class_by_name(*args: Any, class_name: Optional[str] = None, **kwargs: Any) -> Any:
    return call_func_by_name(*args, func_name=class_name, **kwargs)

def get_module_dir_by_obj_name(obj_name: str) -> str:
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(os.path.abspath(module.__file__))

def is_top_level_function(obj: Any) -> bool:
    return callable(obj) and obj.__name__ in sys.modules[obj.__module__].__dict__

def get_top_level_function_name(obj: Any) -> str:
    assert is_top_level_function(obj)
    module = obj.__module__
    if module == '__main__':
        module = os.path.splitext(os.path.basename(sys.modules[module].__file__))[0]
    return module + '.' + obj.__name__

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

def _sha256_of_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()

def _offline_hint(url: str) -> str:
    return f'download it elsewhere and pass the local file path instead of "{url}"'

def _progress(verbose: bool, url: str, nbytes: int, total: Optional[int], done: bool = False) -> None:
    if not verbose:
        return
    mb = nbytes / (1 << 20)
    line = f'Downloading {url} ... {mb:.1f} MB' + (f' / {total / (1 << 20):.1f} MB' if total else '')
    print('\r' + line + (' done\n' if done else ''), end='', file=sys.stderr, flush=True)

def _download_to(url: str, dst_dir: str, num_attempts: int, verbose: bool, sha256: Optional[str], max_bytes: Optional[int]) -> str:
    """Stream `url` into a temp file inside `dst_dir`, verify it and return the temp path."""
    import requests # Imported lazily: only downloads need it.
    os.makedirs(dst_dir, exist_ok=True)
    last_err = None
    for attempt in range(max(int(num_attempts), 1)):
        tmp_path = None
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
                fd, tmp_path = tempfile.mkstemp(dir=dst_dir, prefix='.tmp-', suffix='.part')
                with os.fdopen(fd, 'wb') as f:
                    for chunk in res.iter_content(chunk_size=1 << 20):
                        nbytes += len(chunk)
                        if max_bytes is not None and nbytes > max_bytes:
                            raise OpenURLError(f'Cannot download "{url}": more than the limit of {max_bytes} bytes')
                        h.update(chunk)
                        f.write(chunk)
                        _progress(verbose, url, nbytes, total)
                    f.flush()
                    os.fsync(f.fileno())
                _progress(verbose, url, nbytes, total, done=True)
            if sha256 is not None and h.hexdigest().lower() != sha256.lower():
                raise OpenURLError(f'Download of "{url}" has sha256 {h.hexdigest()}, expected {sha256}; nothing was cached')
            return tmp_path
        except OpenURLError:
            if tmp_path is not None and os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.HTTPError,
                requests.exceptions.ChunkedEncodingError) as err:
            if tmp_path is not None and os.path.exists(tmp_path):
                os.remove(tmp_path)
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
        if sha256 is not None and _sha256_of_file(path).lower() != sha256.lower():
            raise OpenURLError(f'File "{url}" does not match the expected sha256 {sha256}')
        return path if return_filename else open(path, 'rb')
    if not is_url(url):
        raise OpenURLError(f'Cannot open "{url}": only local paths, file:// and http(s):// URLs are supported')

    # Cached download?
    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    cache_file = os.path.join(cache_dir, _cache_file_name(url))
    if cache and os.path.isfile(cache_file):
        if sha256 is None or _sha256_of_file(cache_file).lower() == sha256.lower():
            return cache_file if return_filename else open(cache_file, 'rb')

    # Download into the cache folder (or a temp folder when not caching).
    dst_dir = cache_dir if cache else tempfile.mkdtemp(prefix='dnnlib-')
    tmp_path = _download_to(url, dst_dir, num_attempts, verbose, sha256, max_bytes)
    if not cache:
        try:
            with open(tmp_path, 'rb') as f:
                data = f.read()
        finally:
            os.remove(tmp_path)
            os.rmdir(dst_dir)
        if return_filename:
            raise OpenURLError(f'open_url("{url}", return_filename=True) needs cache=True')
        import io
        return io.BytesIO(data)
    os.replace(tmp_path, cache_file)
    return cache_file if return_filename else open(cache_file, 'rb')

#----------------------------------------------------------------------------

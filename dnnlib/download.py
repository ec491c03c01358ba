"""HTTP(S) downloads for `dnnlib.util.open_url`, with limits a hostile or broken server cannot
escape (docs/crash-safety.md, "Hostile files"):

- an overall deadline per download (default 30 min, $DNNLIB_DOWNLOAD_DEADLINE seconds), and a
  per-read stall timeout; a server that sends less than 1 KiB per minute is given up on;
- a size cap (default 1 GiB, $DNNLIB_DOWNLOAD_MAX_MB), checked against Content-Length before
  anything is written and against the bytes received while streaming;
- an optional sha256, checked before the file gets its final name;
- no temp file left behind: the data goes to a temp file next to the destination that is removed
  on any error, on Ctrl-C and on SIGTERM; temp files of killed (SIGKILL) downloads are swept later.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import signal
import sys
import threading
import time
from typing import Optional

from dnnlib.progress import eta_seconds
from dnnlib.util import format_time

DEADLINE_ENV = 'DNNLIB_DOWNLOAD_DEADLINE'
MAX_MB_ENV = 'DNNLIB_DOWNLOAD_MAX_MB'
DEFAULT_DEADLINE_S = 1800.0
DEFAULT_MAX_BYTES = 1 << 30     # Upstream's largest files (vgg16.pt, ffhq.pkl) are under 600 MB.
CONNECT_S = 10.0
STALL_S = 30.0                  # No byte for this long: the attempt fails.
SLOW_WINDOW_S = 60.0            # Fewer than SLOW_MIN_BYTES within this long: the download fails.
SLOW_MIN_BYTES = 1024
MAX_SLOW_ATTEMPTS = 3           # Attempts that time out or fail after a wait: a server that never answers costs at most 3 x STALL_S.


def _error(message: str) -> OSError:
    from dnnlib.util import OpenURLError # pylint: disable=import-outside-toplevel
    return OpenURLError(message)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, '').strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise _error(f'${name}={text!r} is not a positive number; unset it or set e.g. {name}={default:g}')
    return value


def limits(deadline_s: Optional[float], max_bytes: Optional[int]) -> tuple:
    """(deadline in seconds, size cap in bytes): explicit values, else the environment, else the defaults."""
    deadline = float(deadline_s) if deadline_s is not None else _env_number(DEADLINE_ENV, DEFAULT_DEADLINE_S)
    cap = int(max_bytes) if max_bytes is not None else int(_env_number(MAX_MB_ENV, DEFAULT_MAX_BYTES / (1 << 20)) * (1 << 20))
    return deadline, cap

#----------------------------------------------------------------------------
# SIGTERM would end the process without unwinding, leaving the temp file behind; while a download
# runs (main thread, default handler only) it raises SystemExit instead, so the cleanup runs and
# the process still exits with SIGTERM's usual status.

@contextlib.contextmanager
def sigterm_unwinds():
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def sweep_stale_temps(dst_path: str, older_than_s: float) -> None:
    # Temp files of this destination left by a SIGKILL; one younger than a deadline may be a live download.
    pattern = os.path.join(glob.escape(os.path.dirname(os.path.abspath(dst_path))), f'.{glob.escape(os.path.basename(dst_path))}.*.tmp')
    for path in glob.glob(pattern):
        try:
            if time.time() - os.path.getmtime(path) > older_than_s:
                os.remove(path)
        except OSError:
            pass

#----------------------------------------------------------------------------

def _progress(verbose: bool, url: str, nbytes: int, total: Optional[int], done: bool = False, elapsed: float = 0.0) -> None:
    if not verbose:
        return
    line = f'Downloading {url} ... {nbytes / (1 << 20):.1f} MB' + (f' / {total / (1 << 20):.1f} MB' if total else '')
    eta = eta_seconds(nbytes, total, elapsed) if not done and elapsed > 0 else None
    if eta is not None:
        line += f', {nbytes / elapsed / (1 << 20):.1f} MB/s, eta {format_time(eta)}'
    print('\r' + line + (' done\n' if done else ''), end='', file=sys.stderr, flush=True)


def _stream(res, url: str, f, cap: int, deadline: float, deadline_s: float, verbose: bool) -> str:
    """Copy the body into f within the limits; returns its sha256."""
    total = int(res.headers.get('Content-Length') or 0) or None
    if total is not None and total > cap:
        raise _error(f'Cannot download "{url}": it is {total} bytes, over the limit of {cap} (set ${MAX_MB_ENV} to allow more)')
    read = getattr(res.raw, 'read1', None) or res.raw.read # read1 returns what has arrived, so the clock is checked often.
    h = hashlib.sha256()
    nbytes, window_start, window_bytes = 0, time.monotonic(), 0
    started = window_start
    while True:
        chunk = read(1 << 20, decode_content=True)
        now = time.monotonic()
        if now > deadline:
            raise _error(f'Cannot download "{url}": not complete within {deadline_s:g} s (set ${DEADLINE_ENV} to allow longer)')
        if not chunk:
            break
        nbytes += len(chunk)
        if nbytes > cap:
            raise _error(f'Cannot download "{url}": more than the limit of {cap} bytes (set ${MAX_MB_ENV} to allow more)')
        window_bytes += len(chunk)
        if now - window_start >= SLOW_WINDOW_S:
            if window_bytes < SLOW_MIN_BYTES:
                raise _error(f'Cannot download "{url}": the server sent {window_bytes} bytes in {now - window_start:.0f} s; giving up')
            window_start, window_bytes = now, 0
        h.update(chunk)
        f.write(chunk)
        _progress(verbose, url, nbytes, total, elapsed=now - started)
    if total is not None and nbytes != total:
        raise _error(f'Cannot download "{url}": the connection closed after {nbytes} of {total} bytes')
    _progress(verbose, url, nbytes, total, done=True)
    return h.hexdigest()


def download(url: str, dst_path: str, num_attempts: int, verbose: bool, sha256: Optional[str],
             max_bytes: Optional[int], deadline_s: Optional[float], offline_hint: str) -> str:
    """Stream `url` into `dst_path` atomically; nothing appears there unless complete and verified. Returns its sha256."""
    import requests # pylint: disable=import-outside-toplevel
    import urllib3 # pylint: disable=import-outside-toplevel
    from dnnlib.util import AtomicFile # pylint: disable=import-outside-toplevel
    deadline_s, cap = limits(deadline_s, max_bytes)
    os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
    sweep_stale_temps(dst_path, max(deadline_s, 3600.0))
    deadline = time.monotonic() + deadline_s
    last_err, timeouts = None, 0
    with sigterm_unwinds():
        for attempt in range(max(int(num_attempts), 1)):
            attempt_start = time.monotonic()
            remaining = deadline - attempt_start
            if remaining <= 0:
                break
            try:
                timeout = (min(CONNECT_S, remaining), min(STALL_S, remaining))
                with requests.get(url, stream=True, timeout=timeout, allow_redirects=True, headers={'Accept-Encoding': 'identity'}) as res:
                    if 400 <= res.status_code < 500: # Client errors (404, 403, ...) do not heal by retrying.
                        raise _error(f'Cannot download "{url}": HTTP {res.status_code}; check the URL or {offline_hint}')
                    res.raise_for_status()
                    with AtomicFile(dst_path, 'wb') as f:
                        digest = _stream(res, url, f, cap, deadline, deadline_s, verbose)
                        if sha256 is not None and digest != sha256.lower():
                            raise _error(f'Download of "{url}" has sha256 {digest}, expected {sha256}; nothing was cached')
                return digest
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.HTTPError,
                    requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError) as err:
                last_err = err
                timed_out = isinstance(err, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError))
                timeouts += timed_out or time.monotonic() - attempt_start > CONNECT_S
                # Unreachable hosts (offline, DNS failure, refused) fail fast; timeouts and 5xx are retried a little.
                refused = isinstance(err, requests.exceptions.ConnectionError) and not timed_out and \
                    any(s in str(err) for s in ('NameResolution', 'Name or service', 'refused', 'No route', 'unreachable', 'getaddrinfo'))
                if refused or timeouts >= MAX_SLOW_ATTEMPTS or attempt + 1 >= num_attempts:
                    break
                time.sleep(min(0.5 * (attempt + 1), 5.0, max(deadline - time.monotonic(), 0)))
    if last_err is None:
        raise _error(f'Cannot download "{url}": not complete within {deadline_s:g} s (set ${DEADLINE_ENV} to allow longer)')
    raise _error(f'Cannot download "{url}" ({type(last_err).__name__}); check your connection or {offline_hint}')

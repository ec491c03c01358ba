"""Feature detectors for the quality metrics: where they come from and how they load.

A detector is a module called as ``detector(images, **detector_kwargs)`` on uint8 NCHW RGB
images of any size. Upstream's detectors are TorchScript files downloaded from NVIDIA's CDN
(docs/compatibility.md §6.2). Machines without internet use a local copy of the same files
(``--detector-dir`` or ``$STYLEGAN_ASA_DETECTORS``), a pre-seeded cache folder, or the
offline EfficientNet-Lite0 network, whose numbers are NOT comparable to Inception-based ones.

    python -m metrics.detectors            # where each detector is looked for, and what is present
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import zipfile
from typing import Optional

import dnnlib

ENV_DIR = 'STYLEGAN_ASA_DETECTORS'      # Folder holding local copies of the detector files.
EFFNET = 'effnet-lite0'                 # Name of the offline, not-comparable feature network.

#----------------------------------------------------------------------------
# Upstream's detectors (docs/compatibility.md §6.2). sha256 is None where we could not download the
# file to pin it; pass sha256= (or --detector-sha256) to enforce a checksum anyway.

@dataclasses.dataclass(frozen=True)
class DetectorInfo:
    name:       str                 # Short name used by the metrics: 'inception' or 'vgg16'.
    url:        str                 # Upstream download address.
    filenames:  tuple               # File names accepted in a local folder, first = canonical.
    sha256:     Optional[str]       # Pinned checksum, None = not pinned.

_CDN = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics'
DETECTORS = {
    'inception': DetectorInfo('inception', f'{_CDN}/inception-2015-12-05.pt', ('inception-2015-12-05.pt', 'inception-2015-12-05.pkl'), None),
    'vgg16':     DetectorInfo('vgg16',     f'{_CDN}/vgg16.pt',                 ('vgg16.pt', 'vgg16.pkl'),                                 None),
}

class DetectorError(RuntimeError):
    """A detector could not be found, fetched, verified or loaded; the message says how to fix it."""

#----------------------------------------------------------------------------
# Where detector files live on disk when they are not given explicitly.

def cache_root(cache_dir: Optional[str] = None) -> str:
    """Root of our caches: explicit folder, else dnnlib's cache folder (docs/compatibility.md §6.2)."""
    import dnnlib
    return cache_dir if cache_dir is not None else dnnlib.make_cache_dir_path()


def search_dirs(detector_dir: Optional[str] = None, cache_dir: Optional[str] = None) -> list:
    """Folders searched for detector files, in order: option, environment, pre-seeded cache."""
    dirs = [detector_dir, os.environ.get(ENV_DIR) or None, os.path.join(cache_root(cache_dir), 'detectors')]
    return [d for d in dirs if d]

#----------------------------------------------------------------------------
# Checksums of detector files, memoized by (path, size, mtime) because the files are large.

_sha_memo: dict = {}

def file_sha256(path: str) -> str:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        _sha_memo[key] = dnnlib.util.sha256_file(path)
    return _sha_memo[key]


def _check_sha256(path: str, sha256: Optional[str], what: str) -> None:
    if sha256 is not None and file_sha256(path) != sha256.lower():
        raise DetectorError(f'{what}: checksum mismatch for {path} (sha256 {file_sha256(path)}, expected {sha256}); '
                            f'the file is corrupt or a different version: delete it and fetch it again')

#----------------------------------------------------------------------------
# Finding the file for a named detector: local folders first, then a download.

def find_local_file(info: DetectorInfo, detector_dir=None, cache_dir=None) -> Optional[str]:
    for d in search_dirs(detector_dir, cache_dir):
        if os.path.isfile(d) and os.path.basename(d) in info.filenames:
            return d
        for fname in info.filenames:
            path = os.path.join(d, fname)
            if os.path.isfile(path):
                return path
    if detector_dir is not None:
        # An explicit folder means "use local files": never fall back to a silent download.
        what = 'is not a folder' if not os.path.isdir(detector_dir) else f'holds none of {", ".join(info.filenames)}'
        raise DetectorError(f'--detector-dir: {detector_dir} {what}; put {info.filenames[0]} there '
                            f'(download: {info.url})')
    return None


def _offline_hint(info: DetectorInfo) -> str:
    return (f'to work offline, copy {info.filenames[0]} from a machine with internet into a folder and pass '
            f'--detector-dir=FOLDER (or set {ENV_DIR}=FOLDER), or use --detector={EFFNET} (not comparable to Inception FID)')


def download_file(url: str, cache_dir: str, sha256: Optional[str] = None, verbose: bool = True, what: str = 'detector') -> str:
    """Fetch url into the download cache through dnnlib.util.open_url; return the cached path."""
    import dnnlib.util
    try:
        path = dnnlib.util.open_url(url, cache_dir=cache_dir, num_attempts=2, verbose=verbose,
                                    return_filename=True, cache=True, sha256=sha256)
    except (OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if 'sha256' in reason.lower() or 'checksum' in reason.lower():
            raise DetectorError(f'{what}: downloaded file from {url} has the wrong checksum ({reason}); nothing was cached') from None
        raise DetectorError(f'{what}: {reason.split(";")[0]}') from None   # our own offline hint follows
    if sha256 is not None and file_sha256(path) != sha256.lower():
        actual = file_sha256(path)
        _remove_quietly(path)   # never leave a bad file where the next run would trust it
        raise DetectorError(f'{what}: downloaded file from {url} has sha256 {actual}, expected {sha256}; nothing was cached')
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def resolve_detector_file(name: str, detector_dir=None, cache_dir=None, sha256=None, url=None, verbose=True) -> str:
    """Path of the file for detector `name`, from a local folder or downloaded into the cache."""
    if name not in DETECTORS:
        raise DetectorError(f'Unknown detector "{name}"; known: {", ".join(sorted(DETECTORS))}, {EFFNET}')
    info = DETECTORS[name]
    sha256 = sha256 or info.sha256
    path = find_local_file(info, detector_dir, cache_dir)
    if path is not None:
        _check_sha256(path, sha256, f'detector {name}')
        return path
    url = url or info.url
    try:
        return download_file(url, os.path.join(cache_root(cache_dir), 'downloads'), sha256=sha256, verbose=verbose, what=f'detector {name}')
    except DetectorError as e:
        if 'checksum' in str(e):
            raise
        raise DetectorError(f'{e}; {_offline_hint(info)}') from None

#----------------------------------------------------------------------------
# Loading a detector file: TorchScript archives (upstream's .pt) with torch.jit.load;
# StyleGAN3's .pkl wraps the same TorchScript module in a pickle, which runs code on load,
# so it is accepted only from a file the user placed locally.

def load_detector_file(path: str, device: torch.device) -> torch.nn.Module:
    import torch  # here, not at the top: the tools' --help must not wait for torch
    if zipfile.is_zipfile(path):
        try:
            return torch.jit.load(path, map_location=device).eval()
        except RuntimeError as e:
            raise DetectorError(f'detector file {path} is not a loadable TorchScript module ({str(e).splitlines()[0]})') from None
    if path.endswith('.pkl'):
        with open(path, 'rb') as f:
            try:
                module = pickle.load(f)  # trusted local file (see docs/metrics.md)
            except (pickle.UnpicklingError, ImportError, AttributeError, EOFError) as e:
                raise DetectorError(f'detector file {path} could not be unpickled ({e}); use the TorchScript .pt file instead') from None
        return module.eval().to(device)
    raise DetectorError(f'detector file {path} is neither a TorchScript archive nor a .pkl; re-download it')

#----------------------------------------------------------------------------
# The detector a metric uses: a name plus where to look; `key` identifies its weights so
# that cached dataset statistics are never reused across different detector files.

class DetectorSpec:
    def __init__(self, name: str, detector_dir=None, cache_dir=None, sha256=None, url=None, verbose=False):
        self.name        = name             # 'inception', 'vgg16' or EFFNET.
        self.detector_dir = detector_dir    # Local folder given by the user, None = env / cache / download.
        self.cache_dir   = cache_dir        # Cache root, None = dnnlib's.
        self.sha256      = sha256           # Checksum to enforce, None = the pinned one if any.
        self.url         = url              # Download address override, None = upstream's.
        self.verbose     = verbose
        self._path       = None

    @property
    def comparable(self) -> bool:
        return self.name != EFFNET

    def path(self) -> Optional[str]:
        if self.name == EFFNET:
            return None
        if self._path is None:
            self._path = resolve_detector_file(self.name, self.detector_dir, self.cache_dir, self.sha256, self.url, self.verbose)
        return self._path

    def stem(self) -> str:
        """Short name used in cache file names, like upstream's detector file stem."""
        if self.name == EFFNET:
            return EFFNET
        return os.path.splitext(DETECTORS[self.name].filenames[0])[0]   # not the download's md5-prefixed name

    def key(self) -> str:
        """Identity of the weights: file checksum, or package version for the bundled network."""
        if self.name == EFFNET:
            from metrics import effnet_detector
            return f'{EFFNET}:{effnet_detector.weights_identity()}'
        return f'{self.stem()}:sha256={file_sha256(self.path())}'

    def load(self, device: torch.device) -> torch.nn.Module:
        key = (self.key(), str(device))
        if key not in _loaded:
            if self.name == EFFNET:
                from metrics import effnet_detector
                _loaded[key] = effnet_detector.load(device)
            else:
                _loaded[key] = load_detector_file(self.path(), device)
        return _loaded[key]

_loaded: dict = {}  # (weights key, device) -> module, like upstream's in-process cache

#----------------------------------------------------------------------------
# Pre-seed the cache folder with a local file (verified by loading it), atomically.

def seed_cache(name: str, src: str, cache_dir: Optional[str] = None) -> str:
    if name not in DETECTORS:
        raise DetectorError(f'seed: unknown detector "{name}"; known: {", ".join(sorted(DETECTORS))}')
    if not os.path.isfile(src):
        raise DetectorError(f'seed: {src} is not a file')
    info = DETECTORS[name]
    load_detector_file(src, 'cpu')
    dst_dir = os.path.join(cache_root(cache_dir), 'detectors')
    os.makedirs(dst_dir, exist_ok=True)
    dst = os.path.join(dst_dir, info.filenames[0] if not src.endswith('.pkl') else info.filenames[1])
    with open(src, 'rb') as fsrc, dnnlib.util.AtomicFile(dst, 'wb', file_mode=0o644) as fdst:
        shutil.copyfileobj(fsrc, fdst)
    return dst


def _main(argv: list) -> int:
    if len(argv) == 3 and argv[0] == 'seed':
        try:
            print(seed_cache(argv[1], argv[2]))
        except DetectorError as err:
            print(f'Error: {err}', file=sys.stderr)
            return 1
        return 0
    print(f'{ENV_DIR}={os.environ.get(ENV_DIR, "")}')
    for info in DETECTORS.values():
        local = find_local_file(info)
        print(f'{info.name:10s} {local or "not present"}\n           download: {info.url}')
    print('searched: ' + ', '.join(search_dirs()))
    print('pre-seed: python -m metrics.detectors seed inception /path/to/inception-2015-12-05.pt')
    return 0

if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))

#----------------------------------------------------------------------------

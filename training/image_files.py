"""Reading untrusted dataset files without torch: zip/folder stores, image headers and decoding,
dataset.json labels. `training/dataset.py` builds the training datasets on top; `dataset_tool.py`
uses these alone, so that its start (and `--help`) does not load torch.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile

import numpy as np
import PIL.Image

#----------------------------------------------------------------------------
# Limits for untrusted input. A GAN dataset never needs more; anything beyond is refused
# before it can exhaust memory (decompression bombs, absurd image headers).

MAX_IMAGE_PIXELS  = 178_956_970         # Where Pillow itself declares a decompression bomb (2x its warning level).
MAX_IMAGE_SIDE    = 1 << 15             # Pixels per side.
MAX_MEMBER_BYTES  = 1 << 30             # Uncompressed size of one file.
MAX_ZIP_RATIO     = 100                 # Uncompressed/compressed ratio allowed for members over...
ZIP_RATIO_FLOOR   = 16 << 20            # ...this many bytes (small files may compress well legitimately).
MAX_JSON_BYTES    = 256 << 20           # dataset.json.
MAX_ONEHOT_DIM    = 1 << 16             # Largest class id + 1.

#----------------------------------------------------------------------------
# Every problem with a dataset; an IOError so that upstream-style `except IOError` still works.

class DatasetError(IOError):
    pass

#----------------------------------------------------------------------------
# File extensions Pillow can open (upstream uses PIL.Image.EXTENSION, which also lists save-only ones).

@functools.lru_cache(maxsize=None)
def image_extensions() -> frozenset:
    PIL.Image.init()
    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()

#----------------------------------------------------------------------------
# A zip member name that could escape the archive when extracted (absolute, drive, '..').

def is_hostile_member_name(name: str) -> bool:
    norm = name.replace('\\', '/')
    if norm.startswith('/') or '\0' in norm or (len(norm) >= 2 and norm[1] == ':'):
        return True
    return '..' in norm.split('/')


# Declared-size checks for one member; returns the reason it is refused, or None.
def zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    if is_hostile_member_name(info.filename):
        return f'member name "{info.filename}" points outside the archive'
    if info.file_size > MAX_MEMBER_BYTES:
        return f'member "{info.filename}" declares {info.file_size} bytes (limit {MAX_MEMBER_BYTES})'
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > ZIP_RATIO_FLOOR and \
            info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        return f'member "{info.filename}" expands {info.file_size / max(info.compress_size, 1):.0f}x (decompression bomb?)'
    return None

#----------------------------------------------------------------------------
# Read-only view of a folder or a zip holding images, with hostile-input checks. Shared with
# dataset_tool.py. The zip handle is opened lazily and never pickled (one per DataLoader worker).
# `role` picks the fix an error names: a training set is rebuilt with dataset_tool.py, while
# dataset_tool.py's own --source is the user's raw data, which that tool cannot remake.

STORE_FIXES = {
    'dataset': dict(expect='a dataset folder or .zip made by dataset_tool.py', repair='rebuild it with dataset_tool.py'),
    'source':  dict(expect='a folder or .zip of images', repair='replace it with an intact copy'),
}

class FileStore:
    def __init__(self, path: str, role: str = 'dataset'):
        self.path = path
        self.fix = STORE_FIXES[role]
        self._zipfile = None
        self._zip_pid = None
        if os.path.isdir(path):
            self.kind = 'dir'
            root = os.path.abspath(path)
            self.names = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, '/')
                                for d, _dirs, files in os.walk(root) for f in files)
        elif os.path.isfile(path) and os.path.splitext(path)[1].lower() == '.zip':
            self.kind = 'zip'
            infos = self._get_zipfile().infolist()
            for info in infos:
                problem = zip_member_problem(info)
                if problem is not None:
                    raise DatasetError(f'{path}: refusing this zip: {problem}; {self.fix["repair"]}')
            self._sizes = {info.filename: info.file_size for info in infos if not info.is_dir()}
            self.names = sorted(self._sizes)
        elif not os.path.exists(path):
            raise DatasetError(f'{path}: no such file or folder; pass {self.fix["expect"]}')
        else:
            raise DatasetError(f'{path}: not a folder or .zip; pass {self.fix["expect"]}')

    # Reopened in every process: forked DataLoader workers must not share one file offset.
    def _get_zipfile(self) -> zipfile.ZipFile:
        if self._zipfile is not None and self._zip_pid != os.getpid():
            self._zipfile = None
        if self._zipfile is None:
            try:
                self._zip_pid = os.getpid()
                self._zipfile = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f'{self.path}: not a readable zip ({e}); the file is truncated or corrupt, '
                                   f'{self.fix["repair"]}') from e
        return self._zipfile

    # A stream for reading the start of a file (image headers) without loading it all.
    def open(self, name: str):
        if self.kind == 'dir':
            return open(os.path.join(self.path, name), 'rb')
        return self._get_zipfile().open(name, 'r')

    # The whole file, never more than its declared size (a lying zip header cannot inflate it).
    def read(self, name: str) -> bytes:
        try:
            limit = os.path.getsize(os.path.join(self.path, name)) if self.kind == 'dir' else self._sizes[name]
            if limit > MAX_MEMBER_BYTES:
                raise DatasetError(f'{self.path}: {name} is {limit} bytes (limit {MAX_MEMBER_BYTES}); remove it')
            with self.open(name) as f:
                data = f.read(limit + 1)
        except DatasetError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            raise DatasetError(f'{self.path}: cannot read {name} ({e}); the file is corrupt, {self.fix["repair"]}') from e
        if len(data) > limit:
            raise DatasetError(f'{self.path}: {name} holds more data than declared; refusing it')
        return data

    def close(self) -> None:
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None)

#----------------------------------------------------------------------------
# Image decoding with the header checked first, so that a tiny file declaring a huge image is
# refused before Pillow allocates it.

def _check_header(img: PIL.Image.Image, where: str) -> None:
    _check_size(*img.size, where)


def _check_size(w: int, h: int, where: str) -> None:
    if w < 1 or h < 1 or w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise DatasetError(f'{where}: image header declares {w}x{h} pixels (limit {MAX_IMAGE_PIXELS} pixels, '
                           f'{MAX_IMAGE_SIDE} per side); remove or shrink this file')


# Number of channels an image of this Pillow mode is stored with: gray modes 1, everything else 3.
def mode_channels(mode: str) -> int:
    return 1 if mode in ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'F') else 3


# Converts to 'L' or 'RGB'; transparency is composited onto white rather than dropped.
def to_mode(img: PIL.Image.Image, mode: str) -> PIL.Image.Image:
    if img.mode == mode:
        return img
    if img.mode in ('RGBA', 'LA', 'La', 'RGBa', 'PA') or (img.mode == 'P' and 'transparency' in img.info):
        rgba = img.convert('RGBA')
        canvas = PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        img = PIL.Image.alpha_composite(canvas, rgba)
    if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):  # 16-bit or float gray: scale to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / 257 if arr.max() > 255 else arr
        img = PIL.Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), 'L')
    return img.convert(mode)


def _reason(e: Exception) -> str:
    return 'unknown format or corrupt header' if isinstance(e, PIL.UnidentifiedImageError) else (str(e) or type(e).__name__)


# PNG fast path: signature + IHDR are the first 33 bytes (3x faster than Pillow's open, which
# matters when checking 70k headers at startup). Returns None for anything that is not a PNG.
_PNG_MODES = {0: 'L', 2: 'RGB', 3: 'P', 4: 'LA', 6: 'RGBA'}

def _png_header(head: bytes):
    if len(head) < 33 or head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR' or head[25] not in _PNG_MODES:
        return None
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big'), _PNG_MODES[head[25]]


def read_image_header(f, where: str) -> tuple:
    """(width, height, mode) of an image stream, reading only its header."""
    head = f.read(33)
    png = _png_header(head)
    if png is not None:
        _check_size(png[0], png[1], where)
        return png
    f = io.BytesIO(head + f.read(1 << 20)) # Other formats: Pillow parses the header from the first MiB.
    try:
        with PIL.Image.open(f) as img:
            _check_header(img, where)
            return img.size[0], img.size[1], img.mode
    except DatasetError:
        raise
    except PIL.Image.DecompressionBombError as e:
        raise DatasetError(f'{where}: image header declares too many pixels ({e}); remove or shrink this file') from e
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as e:
        raise DatasetError(f'{where}: not a readable image ({_reason(e)})') from e


def decode_image(data: bytes, where: str) -> PIL.Image.Image:
    """Fully decoded first frame of an image file; any problem is a DatasetError naming `where`."""
    try:
        img = PIL.Image.open(io.BytesIO(data))
        _check_header(img, where)
        img.load()
        return img
    except DatasetError:
        raise
    except PIL.Image.DecompressionBombError as e:
        raise DatasetError(f'{where}: image header declares too many pixels ({e}); remove or shrink this file') from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DatasetError(f'{where}: not a readable image ({_reason(e)})') from e

#----------------------------------------------------------------------------
# dataset.json labels -> one array aligned with `fnames`: int64 [N] class ids or float32 [N, D]
# vectors, or None when the file says there are no labels.

def parse_labels(obj, fnames: list, where: str):
    fix = 'see docs/datasets.md for the format'
    if not isinstance(obj, dict) or 'labels' not in obj:
        raise DatasetError(f'{where}: expected {{"labels": [[file, label], ...]}}; {fix}')
    labels = obj['labels']
    if labels is None:
        return None
    try:
        table = {str(k).replace('\\', '/'): v for k, v in (labels.items() if isinstance(labels, dict) else labels)}
    except (TypeError, ValueError) as e:
        raise DatasetError(f'{where}: "labels" must be a list of [file, label] pairs ({e}); {fix}') from e
    missing = [f for f in fnames if f not in table]
    if missing:
        raise DatasetError(f'{where}: no label for {len(missing)} of {len(fnames)} images (first: {missing[0]}); '
                           f'label every image or set "labels" to null; {fix}')
    values = [table[f] for f in fnames]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        arr = np.array(values, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= MAX_ONEHOT_DIM):
            raise DatasetError(f'{where}: class labels must be in 0..{MAX_ONEHOT_DIM - 1}, found {arr.min()}..{arr.max()}')
        return arr
    try:
        arr = np.array(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DatasetError(f'{where}: labels must be all integers (class ids) or all equal-length lists of '
                           f'numbers ({e}); {fix}') from e
    if arr.ndim != 2:
        raise DatasetError(f'{where}: labels have shape {list(arr.shape)}; expected one int or one flat list of '
                           f'numbers per image, all the same length; {fix}')
    if not np.isfinite(arr).all():
        raise DatasetError(f'{where}: labels contain NaN or Inf')
    return arr

#----------------------------------------------------------------------------

"""Training datasets: an image folder or zip with optional dataset.json labels (upstream-compatible).

`ImageFolderDataset` reads what `dataset_tool.py` writes (docs/compatibility.md §7) and behaves like
upstream's class (same subset for the same seed, same xflip doubling, same one-hot labels). On top
of that it treats its input as untrusted: zip member names, declared sizes and image headers are
checked before anything is decoded, and every problem is reported as a `DatasetError` that names
the file and the fix.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

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

class FileStore:
    def __init__(self, path: str):
        self.path = path
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
                    raise DatasetError(f'{path}: refusing this zip: {problem}. Rebuild it with dataset_tool.py.')
            self._sizes = {info.filename: info.file_size for info in infos if not info.is_dir()}
            self.names = sorted(self._sizes)
        elif not os.path.exists(path):
            raise DatasetError(f'{path}: no such file or folder; pass a dataset folder or .zip made by dataset_tool.py')
        else:
            raise DatasetError(f'{path}: path must point to a directory or zip (see dataset_tool.py)')

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
                                   f'rebuild it with dataset_tool.py') from e
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
            raise DatasetError(f'{self.path}: cannot read {name} ({e}); the dataset is corrupt, rebuild it '
                               f'with dataset_tool.py') from e
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
# Base class with upstream's constructor and accessors. Item i of the dataset is raw image
# _raw_idx[i], mirrored when _xflip[i] is set. Subclasses supply _load_raw_image/_load_raw_labels.
# max_size picks a seeded random subset (kept in file order) before --mirror doubles it.

def _subset_indices(num_images, max_size, random_seed):
    idx = np.arange(num_images, dtype=np.int64)
    if max_size is None or num_images <= max_size:
        return idx
    np.random.RandomState(random_seed).shuffle(idx)
    return np.sort(idx[:max_size])

def _check_raw_labels(labels, num_images):
    assert isinstance(labels, np.ndarray), 'labels must be a numpy array'
    assert labels.shape[0] == num_images, 'one label per image expected'
    assert labels.dtype in (np.float32, np.int64), 'labels must be float32 or int64'
    if labels.dtype == np.int64:
        assert labels.ndim == 1 and (labels >= 0).all(), 'class ids must be >= 0'
    return labels

class Dataset(torch.utils.data.Dataset):
    def __init__(self, name, raw_shape, max_size=None, use_labels=False, xflip=False, random_seed=0):
        self._name, self._raw_shape, self._use_labels = name, list(raw_shape), use_labels
        self._raw_labels = self._label_shape = None
        picked = _subset_indices(self._raw_shape[0], max_size, random_seed)
        copies = 2 if xflip else 1
        self._raw_idx = np.concatenate([picked] * copies)
        self._xflip = np.repeat(np.arange(copies, dtype=np.uint8), picked.size) # 0 for the originals, 1 for mirrors

    def _get_raw_labels(self):
        if self._raw_labels is None: # loaded lazily, dropped again on pickling
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._raw_labels = _check_raw_labels(labels, self._raw_shape[0])
        return self._raw_labels

    # Hooks for subclasses.
    def close(self):
        pass

    def _load_raw_image(self, raw_idx):
        raise NotImplementedError(f'{type(self).__name__} must implement _load_raw_image')

    def _load_raw_labels(self):
        raise NotImplementedError(f'{type(self).__name__} must implement _load_raw_labels')

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_raw_labels'] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception: # Interpreter shutdown: modules may already be gone.
            pass

    def __len__(self):
        return len(self._raw_idx)

    def __getitem__(self, idx):
        img = self._load_raw_image(self._raw_idx[idx])
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8, 'images must be uint8 numpy arrays'
        assert list(img.shape) == self.image_shape, f'image shape {list(img.shape)} != {self.image_shape}'
        if self._xflip[idx]:
            img = np.flip(img, axis=2) # CHW: mirror along W
        return img.copy(), self.get_label(idx)

    def get_label(self, idx):
        raw = self._get_raw_labels()[self._raw_idx[idx]]
        if raw.dtype != np.int64:
            return raw.copy()
        return np.eye(self.label_shape[0], dtype=np.float32)[raw].copy() # class id -> one-hot

    def get_details(self, idx):
        from dnnlib.util import EasyDict
        raw_idx = int(self._raw_idx[idx])
        return EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]), raw_label=self._get_raw_labels()[raw_idx].copy())

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self): # [C, H, W]
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        _, h, w = self.image_shape
        if h != w:
            raise DatasetError(f'{self._name}: images are {w}x{h} (WxH), not square; '
                               f'make a square copy with dataset_tool.py --transform=center-crop (or center-crop-wide)')
        return h

    @property
    def label_shape(self):
        if self._label_shape is None:
            labels = self._get_raw_labels()
            if labels.dtype != np.int64:
                self._label_shape = list(labels.shape[1:])
            else: # one-hot width = largest class id + 1
                self._label_shape = [int(labels.max()) + 1 if labels.size else 0]
        return list(self._label_shape)

    @property
    def label_dim(self):
        shape = self.label_shape
        assert len(shape) == 1, f'label_dim needs flat labels, got shape {shape}'
        return shape[0]

    @property
    def has_labels(self):
        return any(self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

#----------------------------------------------------------------------------
# Images in a folder (recursive) or a zip, as written by dataset_tool.py, with labels from an
# optional dataset.json at the root. All image headers are checked up front so that mixed sizes
# or broken files are found before training starts, not hours into it.

class ImageFolderDataset(Dataset):
    def __init__(self, path, resolution=None, **super_kwargs): # resolution: required size, None = accept any
        self._path = path
        self._store = FileStore(path)
        self._image_fnames = [f for f in self._store.names if is_image_name(f)]
        if len(self._image_fnames) == 0:
            raise DatasetError(f'{path}: no image files found; make a dataset with dataset_tool.py')

        # Shape from the first image; every other header must agree on width and height.
        w, h, mode = self._read_header(self._image_fnames[0])
        self._mode = 'L' if mode_channels(mode) == 1 else 'RGB'
        for fname in self._image_fnames[1:]:
            w2, h2, _ = self._read_header(fname)
            if (w2, h2) != (w, h):
                raise DatasetError(f'{path}: {fname} is {w2}x{h2} but {self._image_fnames[0]} is {w}x{h}; all images '
                                   f'must have one size: rebuild with dataset_tool.py --resolution={max(w, h)}')
        raw_shape = [len(self._image_fnames), mode_channels(mode), h, w]
        if resolution is not None and (w, h) != (resolution, resolution):
            raise DatasetError(f'{path}: Image files do not match the specified resolution ({w}x{h} != {resolution}); '
                               f'rebuild with dataset_tool.py --resolution={resolution}')

        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)
        if self._use_labels and self._get_raw_labels().shape[-1:] == (0,):
            raise DatasetError(f'{path}: labels requested but the dataset has none; add a dataset.json with '
                               f'"labels" (see docs/datasets.md) or train without --cond')

    def _read_header(self, fname):
        where = f'{self._path}: {fname}'
        try:
            with self._store.open(fname) as f:
                return read_image_header(f, where)
        except (OSError, zipfile.BadZipFile, RuntimeError) as e:
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f'{where}: cannot read ({e})') from e

    def close(self):
        store = self.__dict__.get('_store')
        if store is not None:
            store.close()

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        where = f'{self._path}: {fname}'
        img = decode_image(self._store.read(fname), where)
        if img.size != (self._raw_shape[3], self._raw_shape[2]):
            raise DatasetError(f'{where}: decoded size {img.size} differs from its header; the file is corrupt')
        pixels = np.asarray(to_mode(img, self._mode), dtype=np.uint8)
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1) # grayscale HW -> HW1
        return pixels.transpose(2, 0, 1) # HWC -> CHW

    def _load_raw_labels(self):
        fname = 'dataset.json'
        if fname not in self._store.names:
            return None
        where = f'{self._path}: {fname}'
        data = self._store.read(fname)
        if len(data) > MAX_JSON_BYTES:
            raise DatasetError(f'{where}: {len(data)} bytes is too large for a label file')
        try:
            obj = json.loads(data.decode('utf-8'))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise DatasetError(f'{where}: not valid JSON ({e})') from e
        return parse_labels(obj, self._image_fnames, where)

#----------------------------------------------------------------------------

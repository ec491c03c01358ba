"""Training datasets: an image folder or zip with optional dataset.json labels (upstream-compatible).

`ImageFolderDataset` reads what `dataset_tool.py` writes (docs/compatibility.md §7) and behaves like
upstream's class (same subset for the same seed, same xflip doubling, same one-hot labels). On top
of that it treats its input as untrusted: zip member names, declared sizes and image headers are
checked before anything is decoded, and every problem is reported as a `DatasetError` that names
the file and the fix.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import torch

# File reading lives in training/image_files.py (torch-free); its names stay importable from here.
from training.image_files import (  # pylint: disable=unused-import
    MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_JSON_BYTES, MAX_MEMBER_BYTES, MAX_ONEHOT_DIM, MAX_ZIP_RATIO, ZIP_RATIO_FLOOR,
    DatasetError, FileStore, decode_image, image_extensions, is_hostile_member_name, is_image_name, mode_channels,
    parse_labels, read_image_header, to_mode, zip_member_problem)

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

"""training/dataset.py: folder and zip datasets, labels, subsets, x-flips, bad and hostile input."""

import io
import json
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest

from training import image_files
from training.dataset import DatasetError, ImageFolderDataset

#----------------------------------------------------------------------------
# Small datasets written on the fly.

def _png(arr) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def _images(n, h=8, w=8, c=3, seed=0):
    rnd = np.random.RandomState(seed)
    shape = (h, w, c) if c == 3 else (h, w)
    return [rnd.randint(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def write_zip(path, files: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, 'w', compression=compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return str(path)


def write_folder(path, files: dict):
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), 'wb') as f:
            f.write(data)
    return str(path)


def dataset_files(images, labels=None):
    files = {f'{i // 4:05d}/img{i:08d}.png': _png(img) for i, img in enumerate(images)}
    if labels is not None:
        files['dataset.json'] = json.dumps({'labels': [[name, l] for name, l in zip(files, labels)]}).encode()
    return files

#----------------------------------------------------------------------------

def test_folder_and_zip_agree(tmp_path):
    images = _images(6)
    files = dataset_files(images, labels=[0, 2, 1, 0, 2, 1])
    zds = ImageFolderDataset(write_zip(tmp_path / 'mini.zip', files), use_labels=True)
    fds = ImageFolderDataset(write_folder(tmp_path / 'mini', files), use_labels=True)
    for ds in (zds, fds):
        assert ds.name == 'mini' and len(ds) == 6
        assert ds.image_shape == [3, 8, 8] and ds.resolution == 8 and ds.num_channels == 3
        assert ds.label_shape == [3] and ds.label_dim == 3 and ds.has_labels and ds.has_onehot_labels
        img, label = ds[1]
        assert img.dtype == np.uint8 and np.array_equal(img, images[1].transpose(2, 0, 1))
        assert label.dtype == np.float32 and label.tolist() == [0, 0, 1]
    assert ImageFolderDataset(str(tmp_path / 'mini') + '/').name == 'mini'


def test_float_labels_and_no_labels(tmp_path):
    files = dataset_files(_images(3), labels=[[0.5, 1.0], [0.0, -1.0], [2.0, 3.0]])
    ds = ImageFolderDataset(write_zip(tmp_path / 'f.zip', files), use_labels=True)
    assert ds.label_dim == 2 and not ds.has_onehot_labels
    assert ds[1][1].tolist() == [0.0, -1.0]
    ds = ImageFolderDataset(str(tmp_path / 'f.zip'), use_labels=False)
    assert ds.label_shape == [0] and not ds.has_labels and ds[0][1].shape == (0,)


def test_grayscale(tmp_path):
    ds = ImageFolderDataset(write_zip(tmp_path / 'g.zip', dataset_files(_images(2, c=1))))
    assert ds.image_shape == [1, 8, 8] and ds[0][0].shape == (1, 8, 8)


def test_subset_is_seeded_and_matches_upstream_recipe(tmp_path):
    path = write_zip(tmp_path / 's.zip', dataset_files(_images(20)))
    a = ImageFolderDataset(path, max_size=5, random_seed=3)
    b = ImageFolderDataset(path, max_size=5, random_seed=3)
    c = ImageFolderDataset(path, max_size=5, random_seed=4)
    expected = np.arange(20)
    np.random.RandomState(3).shuffle(expected)
    assert len(a) == 5
    assert [a.get_details(i).raw_idx for i in range(5)] == sorted(expected[:5].tolist())
    assert [b.get_details(i).raw_idx for i in range(5)] == [a.get_details(i).raw_idx for i in range(5)]
    assert [c.get_details(i).raw_idx for i in range(5)] != [a.get_details(i).raw_idx for i in range(5)]
    assert len(ImageFolderDataset(path, max_size=50)) == 20


def test_xflip_doubles_and_mirrors(tmp_path):
    images = _images(3)
    ds = ImageFolderDataset(write_zip(tmp_path / 'x.zip', dataset_files(images)), max_size=2, xflip=True)
    assert len(ds) == 4
    assert np.array_equal(ds[2][0], ds[0][0][:, :, ::-1]) and not ds.get_details(0).xflip and ds.get_details(2).xflip


def test_pickles_without_zip_handle(tmp_path):
    ds = ImageFolderDataset(write_zip(tmp_path / 'p.zip', dataset_files(_images(2), labels=[0, 1])), use_labels=True)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone[1][0], ds[1][0]) and clone[1][1].tolist() == [0, 1]

#----------------------------------------------------------------------------
# Bad input: each error names the path and says what to do.

def test_missing_and_wrong_kind(tmp_path):
    with pytest.raises(DatasetError, match='no such file'):
        ImageFolderDataset(str(tmp_path / 'nope.zip'))
    (tmp_path / 'a.tar').write_bytes(b'x')
    with pytest.raises(DatasetError, match='not a folder or .zip; pass a dataset folder or .zip made by dataset_tool.py'):
        ImageFolderDataset(str(tmp_path / 'a.tar'))
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    with pytest.raises(DatasetError, match='no image files.*dataset_tool'):
        ImageFolderDataset(str(tmp_path / 'empty'))


def test_truncated_zip(tmp_path):
    path = write_zip(tmp_path / 't.zip', dataset_files(_images(4)))
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(DatasetError, match='t.zip.*truncated or corrupt'):
        ImageFolderDataset(path)


def test_mixed_resolutions_and_non_square(tmp_path):
    files = dataset_files(_images(2) + _images(1, h=16, w=16))
    with pytest.raises(DatasetError, match=r'img00000002.png is 16x16.*--resolution'):
        ImageFolderDataset(write_zip(tmp_path / 'm.zip', files))
    ds = ImageFolderDataset(write_zip(tmp_path / 'n.zip', dataset_files(_images(2, h=8, w=16))))
    with pytest.raises(DatasetError, match='not square.*center-crop'):
        ds.resolution
    with pytest.raises(DatasetError, match='do not match the specified resolution'):
        ImageFolderDataset(write_zip(tmp_path / 'r.zip', dataset_files(_images(2))), resolution=16)


def test_corrupt_images(tmp_path):
    files = dataset_files(_images(3))
    files['00000/img00000001.png'] = b'not a png at all'
    with pytest.raises(DatasetError, match='img00000001.png: not a readable image'):
        ImageFolderDataset(write_zip(tmp_path / 'c.zip', files))
    files = dataset_files(_images(3))
    files['00000/img00000002.png'] = files['00000/img00000002.png'][:60] # header intact, pixels cut
    ds = ImageFolderDataset(write_zip(tmp_path / 'd.zip', files))
    ds[0]
    with pytest.raises(DatasetError, match='img00000002.png: not a readable image'):
        ds[2]


@pytest.mark.parametrize('labels, match', [
    (None, 'labels requested but the dataset has none'),
    ({'00000/img00000000.png': 1}, r'no label for 1 of 2 images \(first: 00000/img00000001.png\)'),
    ([[0.5, 1.0], [0.5]], 'equal-length lists'),
    ([[[1.0]], [[2.0]]], r'shape \[2, 1, 1\]'),
    ([-1, 2], 'class labels must be in'),
    (['cat', 'dog'], 'all integers'),
])
def test_bad_labels(tmp_path, labels, match):
    files = dataset_files(_images(2))
    if labels is not None:
        table = labels if isinstance(labels, dict) else dict(zip(files, labels))
        files['dataset.json'] = json.dumps({'labels': table}).encode()
    with pytest.raises(DatasetError, match=match):
        ImageFolderDataset(write_zip(tmp_path / 'l.zip', files), use_labels=True)

#----------------------------------------------------------------------------
# Hostile zips are refused before anything is decoded.

@pytest.mark.parametrize('name', ['../evil.png', '/abs/evil.png', 'a/../../evil.png', 'C:/evil.png', '..\\evil.png'])
def test_path_traversal_refused(tmp_path, name):
    files = dataset_files(_images(1))
    files[name] = _png(_images(1)[0])
    with pytest.raises(DatasetError, match='refusing this zip.*outside the archive'):
        ImageFolderDataset(write_zip(tmp_path / 'h.zip', files))


def _png_header_only(width, height) -> bytes:
    # A valid signature and IHDR declaring a huge RGB image, then a tiny IDAT: decoding would allocate GBs.
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b'')


def test_absurd_image_header_refused(tmp_path):
    files = {'a.png': _png_header_only(100000, 100000)}
    with pytest.raises(DatasetError, match='a.png: image header declares'):
        ImageFolderDataset(write_zip(tmp_path / 'big.zip', files))
    files = {'a.png': _png(_images(1)[0]), 'b.png': _png_header_only(8, 30000 * 8)}
    with pytest.raises(DatasetError, match='b.png: image header declares'):
        ImageFolderDataset(write_zip(tmp_path / 'big2.zip', files))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, 'ZIP_RATIO_FLOOR', 1 << 20) # Same rule, smaller test file.
    files = dataset_files(_images(1))
    files['bomb.bin'] = b'\0' * (2 << 20) # 2 MiB that deflate squeezes ~1000x
    with pytest.raises(DatasetError, match='bomb.bin.*expands .*x'):
        ImageFolderDataset(write_zip(tmp_path / 'bomb.zip', files, compression=zipfile.ZIP_DEFLATED))


def test_member_larger_than_declared_refused(tmp_path):
    files = dataset_files(_images(2))
    path = write_zip(tmp_path / 'lie.zip', files)
    ds = ImageFolderDataset(path)
    name = ds._image_fnames[1]
    ds._store._sizes[name] = 10 # As if the central directory understated the size.
    with pytest.raises(DatasetError, match='more data than declared'):
        ds[1]

#----------------------------------------------------------------------------
# The embedded demo set is present, small, labelled and loadable.

def test_embedded_emoji_dataset():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, 'datasets', 'emoji32.zip')
    assert os.path.getsize(path) < 2 << 20
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.resolution == 32 and ds.num_channels == 3 and 300 <= len(ds) <= 2000 and ds.label_dim == 6
    img, label = ds[len(ds) // 2]
    assert img.shape == (3, 32, 32) and label.sum() == 1 and img.std() > 10

#----------------------------------------------------------------------------

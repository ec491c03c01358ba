"""dataset_tool.py: bad files skipped and listed, labels carried over, transforms, no overwrites."""

import io
import json
import os
import re
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training.dataset import ImageFolderDataset

#----------------------------------------------------------------------------

def _save(path, arr, fmt='png'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(arr).save(path, format=fmt)


def _rand(h, w, c=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(h, w, c) if c == 3 else (h, w), dtype=np.uint8)


def run_tool(*args):
    result = CliRunner().invoke(dataset_tool.main, list(args), catch_exceptions=False)
    return result.exit_code, result.output

#----------------------------------------------------------------------------

@pytest.fixture
def messy_folder(tmp_path):
    src = tmp_path / 'src'
    for i in range(5):
        _save(str(src / 'sub' / f'good{i}.png'), _rand(12, 12, seed=i))
    _save(str(src / 'photo.jpg'), _rand(12, 12, seed=9), fmt='jpeg')
    (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    good = io.BytesIO()
    PIL.Image.fromarray(_rand(12, 12)).save(good, format='png')
    (src / 'truncated.png').write_bytes(good.getvalue()[:80])
    (src / 'notes.txt').write_text('not an image')
    labels = {f'sub/good{i}.png': i % 2 for i in range(5)}
    labels.update({'photo.jpg': 1, 'broken.png': 0, 'truncated.png': 0})
    (src / 'dataset.json').write_text(json.dumps({'labels': sorted(labels.items())}))
    return src


def test_bad_files_skipped_and_listed(messy_folder, tmp_path):
    dest = str(tmp_path / 'out.zip')
    code, out = run_tool('--source', str(messy_folder), '--dest', dest, '--resolution', '8')
    assert code == 0, out
    assert 'Wrote 6 images (8x8 RGB, labels: yes)' in out
    assert 'Skipped 2 unreadable files' in out and 'broken.png' in out and 'truncated.png' in out
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
        assert not any(n.endswith('/') for n in names)
        labels = dict(json.loads(zf.read('dataset.json'))['labels'])
    assert len(names) == 7 and '00000/img00000001.png' in names and '00000/img00000000.png' not in names # index 0 was broken
    # Sorted source order: broken, photo, sub/good0..4, truncated -> photo is index 1, good0 index 2.
    assert labels['00000/img00000001.png'] == 1 and labels['00000/img00000002.png'] == 0 and labels['00000/img00000003.png'] == 1
    ds = ImageFolderDataset(dest, use_labels=True)
    assert len(ds) == 6 and ds.resolution == 8 and ds.label_dim == 2
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_max_images_and_folder_dest(messy_folder, tmp_path):
    dest = tmp_path / 'outdir'
    os.makedirs(dest) # An empty folder may be the destination.
    code, out = run_tool('--source', str(messy_folder), '--dest', str(dest), '--resolution', '8', '--max-images', '3',
                         '--resize-filter', 'box')
    assert code == 0, out
    pngs = [f for _, _, files in os.walk(dest) for f in files if f.endswith('.png')]
    assert len(pngs) == 3 and ImageFolderDataset(str(dest)).resolution == 8


def test_labels_null_when_some_missing(tmp_path):
    for i in range(3):
        _save(str(tmp_path / 'src' / f'{i}.png'), _rand(8, 8, seed=i))
    (tmp_path / 'src' / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 0], ['1.png', 1]]}))
    code, out = run_tool('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'o.zip'))
    assert code == 0 and 'no label' in out
    with zipfile.ZipFile(tmp_path / 'o.zip') as zf:
        assert json.loads(zf.read('dataset.json')) == {'labels': None}

#----------------------------------------------------------------------------

def test_center_crop(tmp_path):
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, 4:12] = 255 # The centred square is all white.
    _save(str(tmp_path / 'src' / 'a.png'), img)
    code, out = run_tool('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'o.zip'), '--resolution', '4', '--transform', 'center-crop')
    assert code == 0, out
    arr = ImageFolderDataset(str(tmp_path / 'o.zip'))[0][0]
    assert arr.shape == (3, 4, 4) and arr.min() == 255


def test_center_crop_wide(tmp_path):
    _save(str(tmp_path / 'src' / 'a.png'), np.full((12, 16, 3), 200, np.uint8))
    _save(str(tmp_path / 'src' / 'small.png'), np.full((4, 4, 3), 200, np.uint8)) # narrower than width: dropped
    code, out = run_tool('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'o.zip'), '--resolution', '8x4',
                         '--transform', 'center-crop-wide')
    assert code == 0, out
    assert 'Dropped 1' in out
    arr = ImageFolderDataset(str(tmp_path / 'o.zip'))[0][0]
    assert arr.shape == (3, 8, 8)
    assert arr[:, :2].max() == 0 and arr[:, 6:].max() == 0 and arr[:, 2:6].min() == 200 # black bars, centred strip


def test_grayscale_and_rgba(tmp_path):
    _save(str(tmp_path / 'g' / 'a.png'), _rand(8, 8, c=1))
    code, out = run_tool('--source', str(tmp_path / 'g'), '--dest', str(tmp_path / 'g.zip'))
    assert code == 0 and ImageFolderDataset(str(tmp_path / 'g.zip')).num_channels == 1
    rgba = np.zeros((8, 8, 4), np.uint8) # fully transparent -> white, not black
    _save(str(tmp_path / 'c' / 'a.png'), rgba)
    code, out = run_tool('--source', str(tmp_path / 'c'), '--dest', str(tmp_path / 'c.zip'))
    assert code == 0 and ImageFolderDataset(str(tmp_path / 'c.zip'))[0][0].min() == 255


@pytest.mark.parametrize('images, args, match', [
    ([(8, 16)], [], 'square images.*--transform=center-crop'),
    ([(8, 8), (16, 16)], [], 'differs from the first image.*--resolution=8'),
    ([(12, 12)], [], 'not a power of two.*--resolution=8'),
    ([(8, 8)], ['--transform', 'center-crop'], 'needs the output size'),
    ([], [], 'no usable images'),
])
def test_errors_leave_nothing_behind(tmp_path, images, args, match):
    os.makedirs(tmp_path / 'src')
    for i, (h, w) in enumerate(images):
        _save(str(tmp_path / 'src' / f'{i}.png'), _rand(h, w, seed=i))
    code, out = run_tool('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'o.zip'), *args)
    assert code != 0 and __import__('re').search(match, out), out
    assert sorted(os.listdir(tmp_path)) == ['src']

#----------------------------------------------------------------------------

def test_refuses_to_overwrite(messy_folder, tmp_path):
    (tmp_path / 'taken.zip').write_bytes(b'precious')
    code, out = run_tool('--source', str(messy_folder), '--dest', str(tmp_path / 'taken.zip'), '--resolution', '8')
    assert code != 0 and 'refusing to overwrite' in out
    assert (tmp_path / 'taken.zip').read_bytes() == b'precious'
    os.makedirs(tmp_path / 'full')
    (tmp_path / 'full' / 'keep.txt').write_text('x')
    code, out = run_tool('--source', str(messy_folder), '--dest', str(tmp_path / 'full'), '--resolution', '8')
    assert code != 0 and 'non-empty folder' in out and os.listdir(tmp_path / 'full') == ['keep.txt']


def test_hostile_source_zip(tmp_path):
    buf = io.BytesIO()
    PIL.Image.fromarray(_rand(8, 8)).save(buf, format='png')
    with zipfile.ZipFile(tmp_path / 'evil.zip', 'w') as zf:
        zf.writestr('../../etc/evil.png', buf.getvalue())
    code, out = run_tool('--source', str(tmp_path / 'evil.zip'), '--dest', str(tmp_path / 'o.zip'))
    assert code != 0 and 'outside the archive' in out and not os.path.exists(tmp_path / 'o.zip')


@pytest.mark.parametrize('name, content, match', [
    ('missing', None, 'no such file or folder; pass a folder or .zip of images'),
    ('notes.txt', b'text', 'not a folder or .zip; pass a folder or .zip of images'),
    ('broken.zip', b'PK\x03\x04 truncated', 'not a readable zip .*; the file is truncated or corrupt, replace it with an intact copy'),
])
def test_bad_source_names_a_fix_for_raw_data(tmp_path, name, content, match):
    # The --source is the user's raw data: "rebuild it with dataset_tool.py" would send them in a circle.
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, out = run_tool('--source', str(tmp_path / name), '--dest', str(tmp_path / 'o.zip'))
    assert code != 0 and re.search(match, out) and 'dataset_tool' not in out, out
    assert not os.path.exists(tmp_path / 'o.zip')


def test_zip_source_roundtrip(tmp_path):
    for i in range(3):
        _save(str(tmp_path / 'src' / f'{i}.png'), _rand(8, 8, seed=i))
    assert run_tool('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'a.zip'))[0] == 0
    code, out = run_tool('--source', str(tmp_path / 'a.zip'), '--dest', str(tmp_path / 'b.zip'), '--resolution', '4', '--resize-filter', 'box')
    assert code == 0, out
    a, b = ImageFolderDataset(str(tmp_path / 'a.zip')), ImageFolderDataset(str(tmp_path / 'b.zip'))
    expected = a[2][0].reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))
    assert len(b) == 3 and np.abs(b[2][0].astype(float) - expected).max() <= 1

#----------------------------------------------------------------------------

def test_mnist_idx_source(tmp_path):
    import gzip
    images = np.random.RandomState(0).randint(0, 256, (3, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(np.array([2051, 3, 28, 28], dtype='>u4').tobytes() + images.tobytes())
    with gzip.open(tmp_path / 'train-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(np.array([2049, 3], dtype='>u4').tobytes() + bytes([7, 0, 3]))
    code, out = run_tool('--source', str(tmp_path / 'train-images-idx3-ubyte.gz'), '--dest', str(tmp_path / 'mnist.zip'))
    assert code == 0, out
    ds = ImageFolderDataset(str(tmp_path / 'mnist.zip'), use_labels=True)
    img, label = ds[0]
    assert img.shape == (1, 32, 32) and np.array_equal(img[0, 2:30, 2:30], images[0]) and img[0, :2].max() == 0
    assert label.argmax() == 7 and ds.label_dim == 8

#----------------------------------------------------------------------------

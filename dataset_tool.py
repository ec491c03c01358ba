"""Prepare an image dataset for training: a folder or zip of images in, a folder or zip of
equal-sized square PNGs plus dataset.json labels out (the layout `training.dataset` reads).

    python dataset_tool.py --source=~/photos --dest=~/datasets/photos256.zip --resolution=256 --transform=center-crop

Unreadable or corrupt source files are skipped, counted and listed. The destination is written to
a temporary name and renamed at the end, so an interrupted run leaves nothing half-written, and
an existing non-empty destination is never overwritten.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zipfile

import click
import numpy as np
import PIL.Image

import dnnlib
from training.image_files import DatasetError, FileStore, decode_image, is_image_name, mode_channels, parse_labels, to_mode

#----------------------------------------------------------------------------
# Source readers. Each yields (name, load) pairs, where load() returns a PIL image or raises
# DatasetError, and exposes `labels`: {name: label} or None.

class FolderOrZipSource:
    def __init__(self, path: str):
        self.store = FileStore(path, role='source')
        self.names = [n for n in self.store.names if is_image_name(n)]
        self.num_ignored = len(self.store.names) - len(self.names) - ('dataset.json' in self.store.names)
        self.labels = None
        if 'dataset.json' in self.store.names:
            try:
                obj = json.loads(self.store.read('dataset.json').decode('utf-8'))
                raw = obj.get('labels') if isinstance(obj, dict) else None
                if raw is not None:
                    self.labels = {str(k).replace('\\', '/'): v for k, v in (raw.items() if isinstance(raw, dict) else raw)}
            except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
                raise DatasetError(f'{path}: dataset.json: cannot read labels ({e}); fix or remove it') from e

    def __len__(self):
        return len(self.names)

    def __iter__(self):
        for name in self.names:
            yield name, (lambda name=name: decode_image(self.store.read(name), f'{self.store.path}: {name}'))


# MNIST-style IDX files (also Fashion-MNIST): 28x28 gray digits zero-padded to 32x32, labels 0-9
# from the sibling train-labels-idx1-ubyte.gz.
class MnistSource:
    def __init__(self, path: str):
        images = _read_idx(path, 2051)
        labels_path = os.path.join(os.path.dirname(path), 'train-labels-idx1-ubyte.gz')
        labels = _read_idx(labels_path, 2049) if os.path.isfile(labels_path) else None
        self.images = np.pad(images, [(0, 0), (2, 2), (2, 2)])
        self.names = [f'{i:08d}' for i in range(len(images))]
        self.labels = None if labels is None else {n: int(c) for n, c in zip(self.names, labels)}

    def __len__(self):
        return len(self.names)

    def __iter__(self):
        for name, img in zip(self.names, self.images):
            yield name, (lambda img=img: PIL.Image.fromarray(img, 'L'))


def _read_idx(path: str, magic: int) -> np.ndarray:
    with gzip.open(path, 'rb') as f:
        header = np.frombuffer(f.read(8), dtype='>u4')
        ndim = 3 if magic == 2051 else 1
        dims = [int(header[1])] + ([int(d) for d in np.frombuffer(f.read(8), dtype='>u4')] if ndim == 3 else [])
        if int(header[0]) != magic or np.prod(dims) > (1 << 31):
            raise DatasetError(f'{path}: not an IDX file of the expected kind')
        data = f.read(int(np.prod(dims)) + 1)
    if len(data) != np.prod(dims):
        raise DatasetError(f'{path}: truncated IDX file')
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def open_source(path: str):
    if os.path.basename(path) == 'train-images-idx3-ubyte.gz':
        return MnistSource(path)
    return FolderOrZipSource(path)

#----------------------------------------------------------------------------
# Geometry: crop and resize one image to the requested output size (None = keep).

def center_crop(img: PIL.Image.Image, width: int, height: int, resample) -> PIL.Image.Image:
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((width, height), resample)


# Crop to the aspect width:height, resize, and centre vertically on a black width x width canvas
# (e.g. LSUN Car 512x384). Images narrower than `width` are dropped rather than upscaled.
def center_crop_wide(img: PIL.Image.Image, width: int, height: int, resample) -> PIL.Image.Image | None:
    w, h = img.size
    if w < width:
        return None
    cw, ch = (w, round(w * height / width)) if w * height <= h * width else (round(h * width / height), h)
    img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).resize((width, height), resample)
    canvas = PIL.Image.new(img.mode, (width, width))
    canvas.paste(img, (0, (width - height) // 2))
    return canvas


def make_transform(transform: str | None, width: int | None, height: int | None, resize_filter: str):
    resample = dict(lanczos=PIL.Image.LANCZOS, box=PIL.Image.BOX)[resize_filter]
    if transform is not None and (width is None or height is None):
        raise click.ClickException(f'--transform={transform} needs the output size: pass --resolution (or --width and --height)')
    def apply(img):
        if transform == 'center-crop':
            return center_crop(img, width, height, resample)
        if transform == 'center-crop-wide':
            return center_crop_wide(img, width, height, resample)
        size = (width or img.size[0], height or img.size[1])
        return img if img.size == size else img.resize(size, resample)
    return apply

#----------------------------------------------------------------------------
# Destination writers: build under a temporary name next to the destination, publish with one
# rename at the end, and remove the temporary on failure.

class ZipWriter:
    def __init__(self, dest: str):
        self.dest = dest
        self.out = dnnlib.util.AtomicFile(dest, 'wb')
        self.zf = zipfile.ZipFile(self.out.file, 'w', compression=zipfile.ZIP_STORED)

    def write(self, name: str, data: bytes) -> None:
        self.zf.writestr(name, data)

    def finish(self) -> None:
        self.zf.close()
        self.out.commit()

    def abort(self) -> None:
        self.zf.close()
        self.out.abort()


class FolderWriter:
    def __init__(self, dest: str):
        self.dest = dest
        self.out = dnnlib.util.AtomicFolder(dest)

    def write(self, name: str, data: bytes) -> None:
        path = os.path.join(self.out.tmp_path, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def finish(self) -> None:
        self.out.commit()  # open_dest checked that dest is absent or an empty folder.

    def abort(self) -> None:
        self.out.abort()


def open_dest(dest: str):
    dest = dest.rstrip('/\\') or dest
    if os.path.isdir(dest) and os.listdir(dest):
        raise click.ClickException(f'--dest: {dest} is a non-empty folder; refusing to overwrite it. Pick a new --dest or empty it.')
    if os.path.isfile(dest):
        raise click.ClickException(f'--dest: {dest} already exists; refusing to overwrite it. Pick a new --dest or remove it.')
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise click.ClickException(f'--dest: cannot write into {parent}; create it or pick a writable location.')
    return ZipWriter(dest) if dest.lower().endswith('.zip') else FolderWriter(dest)

#----------------------------------------------------------------------------
# "N" or "WxH" -> (width, height).

def parse_resolution(text: str | None) -> tuple:
    if text is None:
        return None, None
    parts = text.lower().split('x')
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise click.BadParameter(f'"{text}" is not a size; use e.g. 256 or 512x384', param_hint='--resolution')
    if min(dims) < MIN_RESOLUTION:
        raise click.BadParameter(f'"{text}" is smaller than training accepts; use at least {MIN_RESOLUTION}', param_hint='--resolution')
    return dims[0], dims[-1]


MIN_RESOLUTION = 4  # The networks start at 4x4; train.py refuses anything smaller.


def check_first_image(img: PIL.Image.Image, name: str) -> None:
    w, h = img.size
    if w != h:
        raise click.ClickException(f'{name}: images are {w}x{h} after the transform, but training needs square images; '
                                   f'pass --transform=center-crop (or center-crop-wide) and --resolution')
    if w < MIN_RESOLUTION:
        raise click.ClickException(f'{name}: images are {w}x{h}, but training needs at least {MIN_RESOLUTION}x{MIN_RESOLUTION}; '
                                   f'pass --resolution={MIN_RESOLUTION} or larger')
    if w & (w - 1) != 0:
        raise click.ClickException(f'{name}: resolution {w} is not a power of two; pass e.g. --resolution={1 << (w.bit_length() - 1)}')

#----------------------------------------------------------------------------
# The conversion: read, transform, validate, write PNGs and dataset.json. Returns a summary dict.

def convert_dataset(source, writer, transform, max_images=None, png_compression=0) -> dict:
    mode, size, written, labels, skipped, dropped = None, None, 0, [], [], 0
    total = len(source) if max_images is None else min(len(source), max_images)
    with click.progressbar(length=total, label='Converting', file=sys.stderr) as bar:
        for idx, (name, load) in enumerate(source):
            if max_images is not None and written >= max_images:
                break
            try:
                img = load()
            except DatasetError as e:
                msg = str(e)
                skipped.append(f'{name} ({msg[msg.find(name + ": ") + len(name) + 2:] if name + ": " in msg else msg})')
                continue
            mode = mode or ('L' if mode_channels(img.mode) == 1 else 'RGB')
            img = transform(to_mode(img, mode))
            if img is None:
                dropped += 1
                continue
            if size is None:
                check_first_image(img, name)
                size = img.size
            elif img.size != size:
                raise click.ClickException(f'{name}: {img.size[0]}x{img.size[1]} differs from the first image ({size[0]}x{size[1]}); '
                                           f'pass --resolution={size[0]} to resize every image')
            archive_fname = f'{idx:08d}'[:5] + f'/img{idx:08d}.png'
            buf = io.BytesIO()
            img.save(buf, format='png', compress_level=png_compression)
            writer.write(archive_fname, buf.getvalue())
            labels.append((archive_fname, None if source.labels is None else source.labels.get(name)))
            written += 1
            bar.update(1)
    if written == 0:
        raise click.ClickException(f'no usable images found ({len(skipped)} unreadable, {dropped} dropped by the transform)')
    unlabeled = sum(label is None for _, label in labels)
    if source.labels is not None and unlabeled:
        click.echo(f'Warning: {unlabeled} of {written} images have no label in dataset.json; writing "labels": null', err=True)
    out_labels = None if (source.labels is None or unlabeled) else [[f, l] for f, l in labels]
    if out_labels is not None:
        parse_labels({'labels': out_labels}, [f for f, _ in labels], 'dataset.json of --source')
    writer.write('dataset.json', json.dumps({'labels': out_labels}).encode('utf-8'))
    return dict(written=written, skipped=skipped, dropped=dropped, size=size, mode=mode, labeled=out_labels is not None)

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', help='Folder or .zip of images (or train-images-idx3-ubyte.gz)', required=True, metavar='PATH')
@click.option('--dest', help='Output folder or .zip', required=True, metavar='PATH')
@click.option('--max-images', help='Stop after this many images', type=click.IntRange(min=1), metavar='INT')
@click.option('--resolution', help='Output size: N or WxH', metavar='N|WxH')
@click.option('--width', help='Output width (overrides --resolution)', type=click.IntRange(min=1), metavar='INT')
@click.option('--height', help='Output height (overrides --resolution)', type=click.IntRange(min=1), metavar='INT')
@click.option('--transform', help='Crop before resizing', type=click.Choice(['center-crop', 'center-crop-wide']))
@click.option('--resize-filter', help='Resampling filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True)
@click.option('--png-compression', help='PNG compression level (0 = fastest to decode)', type=click.IntRange(0, 9), default=0, show_default=True)
def main(source, dest, max_images, resolution, width, height, transform, resize_filter, png_compression):
    """Convert an image folder or zip into a training dataset (square PNGs + dataset.json).

    \b
    Examples:
      python dataset_tool.py --source=~/raw --dest=~/datasets/faces256.zip --resolution=256 --transform=center-crop
      python dataset_tool.py --source=~/lsun_cars --dest=cars512.zip --resolution=512x384 --transform=center-crop-wide
    """
    res_w, res_h = parse_resolution(resolution)
    width, height = width or res_w, height or res_h
    transform_fn = make_transform(transform, width, height, resize_filter)
    if os.path.abspath(source.rstrip('/\\')) == os.path.abspath(dest.rstrip('/\\')):
        raise click.BadParameter('must differ from --source', param_hint='--dest')
    try:
        src = open_source(source)
    except (DatasetError, OSError, EOFError) as e:
        raise click.ClickException(f'--source: {e}') from e
    writer = open_dest(dest)
    try:
        summary = convert_dataset(src, writer, transform_fn, max_images=max_images, png_compression=png_compression)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    w, h = summary['size']
    click.echo(f'Wrote {summary["written"]} images ({w}x{h} {summary["mode"]}, labels: {"yes" if summary["labeled"] else "no"}) to {dest}')
    if getattr(src, 'num_ignored', 0):
        click.echo(f'Ignored {src.num_ignored} files that are not images.')
    if summary['dropped']:
        click.echo(f'Dropped {summary["dropped"]} images narrower than --width (center-crop-wide).')
    if summary['skipped']:
        click.echo(f'Skipped {len(summary["skipped"])} unreadable files:')
        for line in summary['skipped'][:20]:
            click.echo(f'  {line}')
        if len(summary['skipped']) > 20:
            click.echo(f'  ... and {len(summary["skipped"]) - 20} more')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

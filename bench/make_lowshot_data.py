"""Build the small (100-image) datasets the quality benchmark uses, outside the repository.

    apt-get install -y tuxpaint-stamps-default          # real animal photos (GPL-2), for 'animals'
    python bench/make_lowshot_data.py --outdir=~/lowshot --resolution=32
    # -> ~/lowshot/animals32.zip (100 real animal photos), ~/lowshot/emoji32.zip (100 embedded emoji)

'animals': the Tux Paint stamp set ships 127 real animal photos cut out on a transparent
background (its cartoon, toy, mirrored and flipped stamps are left out). Each is cropped to
its opaque part, centred on a white square and resized by dataset_tool.py. 'emoji': an evenly
spaced subset of the embedded datasets/emoji32.zip, without labels. Both take `--count`
images evenly spaced in sorted order, so every build gives the same set.
The images are third-party data: the output folder must lie outside the repository.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile

import click
import PIL.Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import dataset_tool  # noqa: E402 pylint: disable=wrong-import-position

STAMPS = '/usr/share/tuxpaint/stamps/animals'
SKIP_PARTS = ('/cartoon/', '/toys/')                # drawings, not photos
SKIP_SUFFIXES = ('_mirror.png', '_flip.png')        # copies of other stamps
EMOJI_ZIP = os.path.join(REPO, 'datasets', 'emoji32.zip')

class DataError(click.ClickException):
    """Missing source or bad output folder; the message says how to fix it."""

#----------------------------------------------------------------------------
# Pure helpers: which items to take, and one cut-out photo as a square RGB image.

def evenly_spaced(items: list, count: int) -> list:
    """`count` items spread over the sorted list (all of them when there are fewer)."""
    items = sorted(items)
    if count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def square_on_white(img: PIL.Image.Image, margin: int = 2) -> PIL.Image.Image:
    """Crop to the opaque part, centre it on a white square with a small margin, RGB."""
    rgba = img.convert('RGBA')
    bbox = rgba.getchannel('A').getbbox() or (0, 0, *rgba.size)
    cut = rgba.crop(bbox)
    side = max(cut.size) + 2 * margin
    square = PIL.Image.new('RGBA', (side, side), (255, 255, 255, 255))
    square.alpha_composite(cut, ((side - cut.size[0]) // 2, (side - cut.size[1]) // 2))
    return square.convert('RGB')

#----------------------------------------------------------------------------
# Sources.

def animal_photos(stamps_dir: str) -> list:
    if not os.path.isdir(stamps_dir):
        raise DataError(f'--stamps-dir: {stamps_dir} not found; install the photos with '
                        f'"apt-get install -y tuxpaint-stamps-default" or pass --stamps-dir')
    found = []
    for root, _dirs, files in os.walk(stamps_dir):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith('.png') and not name.endswith(SKIP_SUFFIXES) and not any(p in path + '/' for p in SKIP_PARTS):
                found.append(path)
    return found


def write_animals(stamps_dir: str, count: int, folder: str) -> int:
    chosen = evenly_spaced(animal_photos(stamps_dir), count)
    for idx, path in enumerate(chosen):
        with PIL.Image.open(path) as img:
            square_on_white(img).save(os.path.join(folder, f'{idx:04d}.png'))
    return len(chosen)


def write_emoji(count: int, folder: str) -> int:
    with zipfile.ZipFile(EMOJI_ZIP) as zf:
        chosen = evenly_spaced([n for n in zf.namelist() if n.endswith('.png')], count)
        for idx, name in enumerate(chosen):
            with zf.open(name) as f, PIL.Image.open(f) as img:
                img.convert('RGB').save(os.path.join(folder, f'{idx:04d}.png'))
    return len(chosen)

SOURCES = {'animals': lambda args, count, folder: write_animals(args['stamps_dir'], count, folder),
           'emoji': lambda args, count, folder: write_emoji(count, folder)}

#----------------------------------------------------------------------------

def check_outdir(outdir: str) -> str:
    real = os.path.realpath(os.path.expanduser(outdir))
    if real == REPO or real.startswith(REPO + os.sep):
        raise DataError(f'--outdir: {outdir} is inside the repository; these are third-party images, pick a folder outside it')
    os.makedirs(real, exist_ok=True)
    return real


def build(which: str, outdir: str, resolution: int, count: int, stamps_dir: str) -> str:
    dest = os.path.join(outdir, f'{which}{resolution}.zip')
    if os.path.exists(dest):
        print(f'{dest} exists; keeping it (delete it to rebuild)')
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        n = SOURCES[which](dict(stamps_dir=stamps_dir), count, tmp)
        if n < count:
            print(f'Note: {which} has only {n} images (asked for {count})')
        dataset_tool.main.main(['--source', tmp, '--dest', dest, f'--resolution={resolution}'], standalone_mode=False)
    print(f'Wrote {dest}: {n} images at {resolution}x{resolution}')
    return dest


@click.command()
@click.option('--outdir', help='Folder outside the repository for the zips', required=True, metavar='DIR')
@click.option('--which', help='Datasets to build, comma-separated', default='animals,emoji', show_default=True)
@click.option('--resolution', help='Side of the square images (power of two)', type=click.IntRange(min=4), default=32, show_default=True)
@click.option('--count', help='Images per dataset', type=click.IntRange(min=2), default=100, show_default=True)
@click.option('--stamps-dir', help='Tux Paint animal stamps folder', default=STAMPS, show_default=True, metavar='DIR')
def main(outdir, which, resolution, count, stamps_dir):
    """Build 100-image low-shot datasets (real animal photos, emoji) as dataset_tool.py zips."""
    names = [w.strip() for w in which.split(',') if w.strip()]
    unknown = [w for w in names if w not in SOURCES]
    if unknown or not names:
        raise DataError(f'--which: unknown {",".join(unknown) or "(empty)"}; choose from {",".join(SOURCES)}')
    if resolution & (resolution - 1):
        raise DataError(f'--resolution: {resolution} is not a power of two; use e.g. 32 or 64')
    real_outdir = check_outdir(outdir)
    for name in names:
        build(name, real_outdir, resolution, count, stamps_dir)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

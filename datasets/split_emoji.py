"""Split the embedded demo set by category, for the README's fine-tuning demo (docs/demo.md).

    python datasets/split_emoji.py --keep=face --max-images=100 --dest=datasets/emoji32-faces100.zip
    python datasets/split_emoji.py --drop=face --dest=~/datasets/emoji32-noface.zip

The network in `pretrained/` was trained on everything but faces; the demo fine-tunes it on 100
faces it has never seen (the FFHQ -> MetFaces workflow at emoji scale). Images are copied byte for
byte, in file order, with their labels.
"""

import json
import os
import sys
import zipfile

import click

CLASSES = ['face', 'animal', 'food', 'nature', 'travel', 'object'] # Order of datasets/make_emoji.py.

#----------------------------------------------------------------------------

def select(labels: list, keep: set, max_images: int) -> list:
    """Entries [name, class] whose class is in keep, in file order, at most max_images."""
    chosen = [entry for entry in sorted(labels) if CLASSES[entry[1]] in keep]
    return chosen[:max_images] if max_images is not None else chosen

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', default='datasets/emoji32.zip', show_default=True, help='The embedded demo set')
@click.option('--dest', required=True, help='Output .zip (refused if it exists)')
@click.option('--keep', multiple=True, type=click.Choice(CLASSES), help='Categories to keep (repeatable)')
@click.option('--drop', multiple=True, type=click.Choice(CLASSES), help='Categories to leave out (repeatable)')
@click.option('--max-images', type=click.IntRange(min=1), default=None, help='Keep at most this many')
def main(source, dest, keep, drop, max_images):
    dest = os.path.expanduser(dest)
    if os.path.exists(dest):
        sys.exit(f'Error: --dest {dest} exists; choose a new path or delete it first')
    if bool(keep) == bool(drop):
        sys.exit('Error: give either --keep or --drop (categories: ' + ', '.join(CLASSES) + ')')
    wanted = set(keep) if keep else set(CLASSES) - set(drop)
    with zipfile.ZipFile(source) as src:
        labels = json.loads(src.read('dataset.json'))['labels']
        chosen = select(labels, wanted, max_images)
        tmp = dest + '.tmp'
        with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED) as out:
            for name, _cls in chosen:
                out.writestr(name, src.read(name))
            out.writestr('dataset.json', json.dumps({'labels': chosen}))
    os.replace(tmp, dest)
    print(f'Wrote {len(chosen)} images ({", ".join(sorted(wanted))}) to {dest}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

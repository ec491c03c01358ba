"""Render the embedded demo dataset datasets/emoji32.zip from the Noto Color Emoji font.

Run once (the zip is committed):
    apt-get install -y fonts-noto-color-emoji
    python datasets/make_emoji.py --dest=datasets/emoji32.zip

Every single-codepoint emoji from U+1F300 up that the font draws is cropped to its bounding box,
padded to a square, composited onto white and resized to 32x32 RGB. Labels are six coarse
categories from hand-picked Unicode ranges, so that conditional training (--cond=1) can be demoed;
at most 150 per category (evenly spaced in code point order) keep the classes balanced and the zip small.
"""

import json
import os
import sys
import tempfile

import click
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dataset_tool # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------
# Categories: (first, last) code point ranges, checked in order; anything else is 'object'.

CLASSES = ['face', 'animal', 'food', 'nature', 'travel', 'object']
RANGES = [
    (0, 0x1F600, 0x1F64F), (0, 0x1F910, 0x1F92F), (0, 0x1F970, 0x1F97A), (0, 0x1F9D0, 0x1F9D0), (0, 0x1FAE0, 0x1FAE8),
    (1, 0x1F400, 0x1F43F), (1, 0x1F980, 0x1F9AE), (1, 0x1F577, 0x1F578), (1, 0x1FAB0, 0x1FABF),
    (2, 0x1F345, 0x1F37F), (2, 0x1F950, 0x1F96F), (2, 0x1F9C0, 0x1F9CB), (2, 0x1FAD0, 0x1FADF),
    (3, 0x1F300, 0x1F344), (3, 0x1FAB4, 0x1FAB7), (3, 0x1F490, 0x1F490),
    (4, 0x1F680, 0x1F6FF), (4, 0x1F3D4, 0x1F3F0), (4, 0x1F5FA, 0x1F5FF),
]


def category(cp: int) -> int:
    for cls, lo, hi in RANGES:
        if lo <= cp <= hi:
            return cls
    return CLASSES.index('object')

#----------------------------------------------------------------------------
# One emoji as an RGB image: glyph bounding box, padded square, on white, resized.

def render(font, cp: int, size: int):
    canvas = PIL.Image.new('RGBA', (160, 160), (0, 0, 0, 0))
    PIL.ImageDraw.Draw(canvas).text((8, 8), chr(cp), font=font, embedded_color=True)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    side = max(glyph.size) + 4
    square = PIL.Image.new('RGBA', (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.size[0]) // 2, (side - glyph.size[1]) // 2))
    return square.convert('RGB').resize((size, size), PIL.Image.LANCZOS)

#----------------------------------------------------------------------------

@click.command()
@click.option('--font', default='/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf', show_default=True)
@click.option('--dest', default='datasets/emoji32.zip', show_default=True)
@click.option('--size', default=32, show_default=True)
@click.option('--per-class', default=150, show_default=True, help='At most this many emoji per category')
def main(font, dest, size, per_class):
    font = PIL.ImageFont.truetype(font, 109) # CBDT bitmap font: 109 is its only size.
    with tempfile.TemporaryDirectory() as tmp:
        skin_tones = range(0x1F3FB, 0x1F400) # Modifiers; the font draws them as plain swatches.
        drawn = [cp for cp in range(0x1F300, 0x1FB00) if cp not in skin_tones and render(font, cp, 8) is not None]
        labels = []
        for cls in range(len(CLASSES)):
            members = [cp for cp in drawn if category(cp) == cls]
            step = max(len(members) / per_class, 1) # Even spacing keeps the variety of big classes.
            for cp in [members[int(i * step)] for i in range(min(per_class, len(members)))]:
                name = f'u{cp:05x}.png'
                render(font, cp, size).save(os.path.join(tmp, name))
                labels.append([name, cls])
        labels.sort()
        with open(os.path.join(tmp, 'dataset.json'), 'w', encoding='utf-8') as f:
            json.dump({'labels': labels}, f)
        counts = {c: sum(l == i for _, l in labels) for i, c in enumerate(CLASSES)}
        print(f'Rendered {len(labels)} emoji; per class: {counts}')
        dataset_tool.main.main(['--source', tmp, '--dest', dest, '--png-compression', '9'], standalone_mode=False)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

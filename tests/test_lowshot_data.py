"""bench/make_lowshot_data.py: deterministic 100-image sets, cut-outs on white, never inside the repo."""

import importlib.util
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('make_lowshot_data', os.path.join(ROOT, 'bench', 'make_lowshot_data.py'))
mld = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mld)

#----------------------------------------------------------------------------

def test_evenly_spaced_is_sorted_spread_and_capped():
    assert mld.evenly_spaced(list(range(10))[::-1], 5) == [0, 2, 4, 6, 8]
    assert mld.evenly_spaced(['b', 'a'], 5) == ['a', 'b']
    picked = mld.evenly_spaced(list(range(127)), 100)
    assert len(set(picked)) == 100 and picked[0] == 0 and picked[-1] >= 120


def test_square_on_white_centres_the_opaque_part():
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[5:9, 10:30] = (255, 0, 0, 255)        # a 4x20 red bar on a transparent canvas
    out = np.asarray(mld.square_on_white(PIL.Image.fromarray(rgba, 'RGBA'), margin=2))
    assert out.shape == (24, 24, 3)
    assert (out[0] == 255).all() and (out[:, 0] == 255).all()       # white, not black, around it
    assert (out[10:14, 2:22] == (255, 0, 0)).all()                 # centred vertically


def _stamps(tmp_path):
    folder = tmp_path / 'stamps'
    for rel in ('birds/a.png', 'birds/b.png', 'mammals/c.png', 'cartoon/d.png', 'birds/a_mirror.png'):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new('RGBA', (30, 10), (0, 128, 0, 255)).save(path)
    return str(folder)


def test_builds_animals_and_emoji_zips(tmp_path):
    out = tmp_path / 'out'
    result = CliRunner().invoke(mld.main, [f'--outdir={out}', '--count=3', '--resolution=16', f'--stamps-dir={_stamps(tmp_path)}'])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out / 'animals16.zip') as zf:
        assert len([n for n in zf.namelist() if n.endswith('.png')]) == 3     # cartoon and mirror skipped
    with zipfile.ZipFile(out / 'emoji16.zip') as zf:
        names = [n for n in zf.namelist() if n.endswith('.png')]
        assert len(names) == 3
        with zf.open(names[0]) as f:
            assert PIL.Image.open(f).size == (16, 16)


@pytest.mark.parametrize('args, needle', [
    (['--outdir={repo}/datasets/x'], 'inside the repository'),
    (['--outdir={tmp}', '--which=cats'], '--which'),
    (['--outdir={tmp}', '--resolution=24'], 'power of two'),
    (['--outdir={tmp}', '--stamps-dir={tmp}/missing', '--which=animals'], 'tuxpaint-stamps-default'),
])
def test_bad_input_is_one_clear_error(tmp_path, args, needle):
    args = [a.format(repo=ROOT, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(mld.main, args)
    assert result.exit_code != 0 and needle in result.output
    assert not os.path.exists(os.path.join(ROOT, 'datasets', 'x'))

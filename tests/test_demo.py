"""demo.py: fine-tune runs per spec and the labelled before/after picture (tiny networks, 16 px)."""

import glob
import os
import shutil
import sys

import click
import numpy as np
import PIL.Image
import pytest

import demo
import train
from _training_utils import make_zip

TRAIN = ['--cfg=tiny', '--batch=8', '--tick=0.008', '--workers=0', '--device=cpu', '--metrics=none']


def test_label_rows_layout():
    rows = [('a', [np.full((16, 16, 3), 10, np.uint8)] * 3), ('b', [np.full((16, 16, 3), 200, np.uint8)] * 2)]
    image = demo.label_rows(rows, scale=2, label_width=40)
    assert image.size == (40 + 3 * 32, 2 * 32)
    assert image.getpixel((40, 0)) == (10, 10, 10) and image.getpixel((40 + 2 * 32, 32)) == (255, 255, 255)


def test_demo_end_to_end(tmp_path, small_grids, monkeypatch, capsys):
    data = make_zip(str(tmp_path / 'faces.zip'), num=16)
    train.main(['--outdir', str(tmp_path / 'pre'), '--data', data, '--kimg=0.008', '--aug=noaug', *TRAIN], standalone_mode=False)
    out = capsys.readouterr().out
    assert 'Output directory:' in out and '"G_kwargs"' not in out  # the options JSON stays in training_options.json
    network = str(tmp_path / 'pretrained.pkl')  # alone, as shipped: no training state next to it
    shutil.copy(glob.glob(str(tmp_path / 'pre' / '*' / 'network-snapshot-*.pkl'))[-1], network)
    # The training subprocesses run in this process instead, one after the other, so that the small grids apply.
    monkeypatch.setattr(demo, 'train_in_parallel', lambda commands, consoles, threads: [
        train.main(cmd[2:], standalone_mode=False) for cmd in commands.values()])
    outdir = str(tmp_path / 'demo')
    args = ['--outdir', outdir, '--network', network, '--data', data, '--kimg', '0.016', '--train-args', ' '.join(TRAIN[1:])]
    demo.main(args, standalone_mode=False)
    assert sorted(os.listdir(outdir)) == ['before-after.png', 'run-ada+asa', 'run-noaug']
    assert os.listdir(os.path.join(outdir, 'run-noaug'))[0].endswith('-noaug-resumecustom')
    picture = PIL.Image.open(os.path.join(outdir, 'before-after.png'))
    assert picture.size == (150 + 8 * 32, 4 * 32)
    pixels = np.asarray(picture)
    before, noaug, asa = (pixels[r * 32:(r + 1) * 32, 150:] for r in (1, 2, 3))
    assert not np.array_equal(before, noaug) and not np.array_equal(noaug, asa)   # training changed G_ema
    with pytest.raises(click.BadParameter, match='already holds a demo'):
        demo.main(args, standalone_mode=False)


def test_parallel_runs_report_ticks_and_failures(tmp_path, capsys):
    script = 'import sys, time; print("tick 0 kimg 0.0/1", flush=True); time.sleep(0.3); print("tick 1 kimg 1.0/1"); sys.exit(int(sys.argv[1]))'
    consoles = {name: str(tmp_path / f'{name}.txt') for name in ('a', 'b')}
    demo.train_in_parallel({'a': [sys.executable, '-c', script, '0'], 'b': [sys.executable, '-c', script, '0']}, consoles, 1, poll=0.05)
    out = capsys.readouterr().out
    assert '[a] tick 1 kimg 1.0/1' in out and '[b] tick 1 kimg 1.0/1' in out
    with pytest.raises(click.ClickException, match=r'--aug=b failed \(exit code 3\); its output is in .*b.txt'):
        demo.train_in_parallel({'a': [sys.executable, '-c', script, '0'], 'b': [sys.executable, '-c', script, '3']}, consoles, 1, poll=0.05)

"""bench/quality.py: summaries and verdicts, the scheduler (failure, resume, no rescoring) with a
stand-in train.py, and a real two-spec smoke run of a fraction of a kimg."""

import io
import json
import os
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from test_metrics import make_image_folder, make_run, save_detector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
import quality           # noqa: E402
import quality_report    # noqa: E402
import quality_runs      # noqa: E402

#----------------------------------------------------------------------------
# Pure parts.

def test_run_summary_best_and_final():
    pts = [(4, dict(kid=0.3, fd=90.0)), (8, dict(kid=0.1, fd=95.0)), (12, dict(kid=0.2, fd=80.0))]
    s = quality_report.run_summary(pts)
    assert (s['best_kid'], s['best_kid_kimg'], s['final_kid'], s['final_kimg']) == (0.1, 8, 0.2, 12)
    assert (s['best_fd'], s['best_fd_kimg'], s['final_fd']) == (80.0, 12, 80.0)
    assert quality_report.run_summary([]) == {}


@pytest.mark.parametrize('a, b, verdict', [
    ([1, 2, 3], [5, 6, 7], 'better beyond the seed spread'),
    ([5, 6, 7], [1, 2, 3], 'worse beyond the seed spread'),
    ([1, 5, 3], [4, 6, 7], 'within the seed spread'),
    ([1], [5], 'one seed: spread unknown'),
])
def test_versus_compares_seed_ranges(a, b, verdict):
    v = quality_report.versus(quality_report.spread(a), quality_report.spread(b))
    assert v['verdict'] == verdict
    assert v['diff'] == pytest.approx(np.mean(a) - np.mean(b))


def test_spread_uses_sample_sd_and_curve_bands():
    s = quality_report.spread([1.0, 3.0, None])
    assert (s['mean'], s['std'], s['min'], s['max'], s['n']) == (2.0, pytest.approx(2 ** 0.5), 1.0, 3.0, 2)
    c = quality_report.curve([[(4, dict(kid=1.0)), (8, dict(kid=2.0))], [(4, dict(kid=3.0))]], 'kid')
    assert c == [(4, 2.0, 1.0, 3.0), (8, 2.0, 2.0, 2.0)]


def test_slugs_are_safe_and_unique(tmp_path):
    runs = quality_runs.plan_runs(['ada+asa:lambda0=1,ramp=none', 'ada+asa:lambda0=1;ramp=none', 'noaug'], [0, 1], str(tmp_path))
    names = [r.name for r in runs]
    assert len(set(names)) == 6 and names[0] == 'ada+asa_lambda0=1_ramp=none-seed0'
    assert all('/' not in n and ':' not in n for n in names)


def test_plot_draws_bands_with_pillow():
    from metrics import plot
    png = plot._pillow_plot([('a', [(0, 1.0), (4, 2.0)])], 'kimg', 'kid', 't', {'a': [(0, 0.0, 1.5), (4, 1.0, 9.0)]})
    img = np.asarray(PIL.Image.open(io.BytesIO(png)).convert('RGB'))
    tint = tuple(int(c + (255 - c) * 0.75) for c in plot.PALETTE[0])
    assert (img == tint).all(axis=2).sum() > 100      # the shaded band is there
    png = plot._pillow_plot([('a', [(2, 1.0)])], 'kimg', 'kid', 't', {'a': [(2, 0.5, 1.5)]})
    img = np.asarray(PIL.Image.open(io.BytesIO(png)).convert('RGB'))
    assert (img == tint).all(axis=2).sum() > 100      # one point: the spread is a bar

#----------------------------------------------------------------------------
# Scheduler with a stand-in for train.py: snapshots every --tick, one run fails once.

FAKE_TRAIN = r'''
import json, os, shutil, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)
with open(os.environ['FAKE_TRAIN_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\n')
outdir = args['outdir']
os.makedirs(outdir, exist_ok=True)
run_dir = os.path.join(outdir, f'{len(os.listdir(outdir)):05d}-fake')
os.makedirs(run_dir)
start = 0
if args.get('resume') == 'latest':
    start = max(int(n[17:23]) for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d))
                for n in os.listdir(os.path.join(outdir, d)) if n.endswith('.pkl'))
kimg, tick = float(args['kimg']), float(args['tick'])
k = start
while k < kimg:
    k = min(k + tick, kimg)
    pkl = os.path.join(run_dir, f'network-snapshot-{int(k):06d}.pkl')
    shutil.copy(os.environ['FAKE_TRAIN_SNAPSHOT'], pkl)
    open(pkl + '.sha256', 'w').write('x')
    print(f'tick 1     kimg {k:<8.1f} time 1s', flush=True)
    if os.environ.get('FAKE_TRAIN_FAIL', '\0') in outdir and args.get('resume') != 'latest':
        sys.exit(3)
    if os.environ.get('FAKE_TRAIN_STOP', '\0') in outdir and args.get('resume') != 'latest':
        sys.exit(0)     # like SIGTERM: a clean exit short of --kimg
'''


def _fake_env(tmp_path, monkeypatch):
    data = make_image_folder(str(tmp_path / 'data'), 6)
    src = make_run(str(tmp_path / 'src'), data, [0])
    fake = tmp_path / 'fake_train.py'
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setattr(quality_runs, 'TRAIN_PY', str(fake))
    monkeypatch.setenv('FAKE_TRAIN_LOG', str(tmp_path / 'argv.jsonl'))
    monkeypatch.setenv('FAKE_TRAIN_SNAPSHOT', os.path.join(src, 'network-snapshot-000000.pkl'))
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return data, save_detector(str(tmp_path / 'det'))


def test_failed_run_is_continued_and_nothing_is_rescored(tmp_path, monkeypatch):
    data, det = _fake_env(tmp_path, monkeypatch)
    monkeypatch.setenv('FAKE_TRAIN_FAIL', 'ada-seed1')
    out = tmp_path / 'out'
    args = [f'--data={data}', '--aug=noaug', '--aug=ada', '--kimg=4', '--eval-every=2', '--seeds=2', f'--outdir={out}',
            '--device=cpu', '--num-gen=6', f'--detector-dir={det}', '--parallel=2', '--grid-images=3']
    result = CliRunner().invoke(quality.main, args)
    assert result.exit_code != 0 and 'ada-seed1 (exit 3)' in result.output
    lines = [json.loads(l) for l in (out / 'scores.jsonl').read_text().splitlines()]
    assert sorted((l['run'], l['kimg']) for l in lines) == sorted(
        [(f'{s}-seed{i}', k) for s in ('noaug', 'ada') for i in (0, 1) for k in (2, 4)][:-1])   # ada-seed1 stopped at 2
    assert all(l['detector'] == 'inception' for l in lines)

    monkeypatch.delenv('FAKE_TRAIN_FAIL')
    argv_before = len((tmp_path / 'argv.jsonl').read_text().splitlines())
    result = CliRunner().invoke(quality.main, args)
    assert result.exit_code == 0, result.output
    argv = [json.loads(l) for l in (tmp_path / 'argv.jsonl').read_text().splitlines()[argv_before:]]
    assert [(a['aug'], a['seed'], a.get('resume')) for a in argv] == [('ada', '1', 'latest')]   # only the unfinished run
    lines = [json.loads(l) for l in (out / 'scores.jsonl').read_text().splitlines()]
    assert len(lines) == 8 and len({(l['run'], l['kimg']) for l in lines}) == 8                 # nothing scored twice
    md = (out / 'quality.md').read_text()
    assert 'Inception-v3' in md and '| noaug | 0,1 |' in md and '## Against `ada`' in md
    assert PIL.Image.open(out / 'grids.png').size[1] == 16 * 5                                   # reals + 4 runs
    PIL.Image.open(out / 'quality.png').verify()


def test_reused_outdir_with_other_settings_is_refused(tmp_path, monkeypatch):
    data, det = _fake_env(tmp_path, monkeypatch)
    out = tmp_path / 'out'
    base = [f'--data={data}', '--aug=noaug', '--kimg=2', '--seeds=1', f'--outdir={out}', '--device=cpu', '--num-gen=6', f'--detector-dir={det}']
    assert CliRunner().invoke(quality.main, base + ['--eval-every=2']).exit_code == 0
    result = CliRunner().invoke(quality.main, base + ['--eval-every=1'])
    assert result.exit_code != 0 and 'eval_every=2.0' in result.output and 'new --outdir' in result.output
    result = CliRunner().invoke(quality.main, base + ['--baseline=ada'])
    assert result.exit_code != 0 and '--baseline' in result.output

#----------------------------------------------------------------------------
# The real thing: two specs, a fraction of a kimg, 16 px, the tiny stand-in detector.

@pytest.mark.slow
def test_smoke_two_specs_real_training(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    data = make_image_folder(str(tmp_path / 'data'), 8)
    det = save_detector(str(tmp_path / 'det'))
    out = tmp_path / 'out'
    args = [f'--data={data}', '--aug=noaug', '--aug=ada', '--kimg=0.016', '--eval-every=0.016', '--seeds=1', f'--outdir={out}',
            '--device=cpu', '--num-gen=4', f'--detector-dir={det}', '--grid-images=2', '--train-args=--batch=8 --batch-gpu=8']
    result = CliRunner().invoke(quality.main, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(l) for l in (out / 'scores.jsonl').read_text().splitlines()]
    assert sorted((l['run'], l['kimg']) for l in lines) == [('ada-seed0', 0.016), ('noaug-seed0', 0.016)]   # not the one-iteration point
    assert all(np.isfinite([l['kid'], l['fd']]).all() for l in lines)
    md = (out / 'quality.md').read_text()
    assert '| noaug | 0 |' in md and '| ada | 0 |' in md
    assert PIL.Image.open(out / 'grids.png').size[1] == 16 * 3
    result = CliRunner().invoke(quality.main, args)             # done: no training, no rescoring
    assert result.exit_code == 0 and 'training' not in result.output.replace('training done', '')
    assert len((out / 'scores.jsonl').read_text().splitlines()) == 2


def test_eval_points_snap_to_the_grid_skip_start_and_repeats():
    snaps = [(0.016, 'a'), (4.0, 'b'), (8.0, 'c'), (8.016, 'resumed'), (12.048, 'd'), (16.0, 'e'), (20.0, 'f')]
    assert quality_runs.eval_points(snaps, 4, 16) == [(4.0, 'b'), (8.0, 'c'), (12.0, 'd'), (16.0, 'e')]
    assert quality_runs.eval_points([(0.008, 'x'), (0.016, 'y')], 0.016, 0.016) == [(0.016, 'y')]


def test_clean_exit_short_of_kimg_is_not_done(tmp_path, monkeypatch):
    data, det = _fake_env(tmp_path, monkeypatch)
    monkeypatch.setenv('FAKE_TRAIN_STOP', 'noaug-seed0')
    args = [f'--data={data}', '--aug=noaug', '--kimg=4', '--eval-every=2', '--seeds=1', f'--outdir={tmp_path / "out"}',
            '--device=cpu', '--num-gen=6', f'--detector-dir={det}']
    result = CliRunner().invoke(quality.main, args)
    assert result.exit_code == 0 and 'stopped at kimg 2' in result.output
    assert not (tmp_path / 'out' / 'runs' / 'noaug-seed0' / 'done.json').exists()
    result = CliRunner().invoke(quality.main, args)
    assert 'continuing noaug-seed0' in result.output and 'noaug-seed0 finished' in result.output

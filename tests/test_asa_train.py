"""End-to-end CPU runs of ASA through train.py, one tick each: `asa`, `ada+asa`, per-class ASA on a
labeled set, and a resume of the `asa` run from its snapshot.

Checks that every run finishes, that the snapshot stores ASA's trackers as plain data under
`asa_plugin` while the pickled D does not reference our plugin (upstream-loadable), that the per-tick
ASA statistics reach stats.jsonl, and that a resume continues the saved covariance state instead of
starting fresh. All runs share one subprocess (one torch import) to stay cheap.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.isfile(os.path.join(ROOT, 'training', 'training_loop.py'))
                            and os.path.isfile(os.path.join(ROOT, 'train.py'))),
                       reason='needs train.py and training/training_loop.py (training and CLI areas), not there yet'),
]

# name -> (extra train.py arguments, dataset); 'resume' continues the 'asa' run.
RUNS = {
    'asa':       (['--aug=asa:ramp=none'], 'plain'),
    'ada+asa':   (['--aug=ada+asa:ramp=none'], 'plain'),
    'per_class': (['--aug=asa:ramp=none,per_class=true', '--cond=1'], 'labeled'),
    'resume':    (['--aug=asa:ramp=none', '--resume={asa_snapshot}'], 'plain'),
}

DRIVER = textwrap.dedent('''
    import glob, json, os, pickle, sys, traceback
    sys.path.insert(0, os.getcwd())
    sys.path.insert(0, os.path.join(os.getcwd(), 'tests'))
    import torch
    torch.set_num_threads(1)
    from _training_utils import cheap_grids, make_zip
    cheap_grids()
    import train
    outdir, runs = sys.argv[1], json.loads(sys.argv[2])
    data = {'plain': make_zip(os.path.join(outdir, 'plain.zip'), num=16, res=16),
            'labeled': make_zip(os.path.join(outdir, 'labeled.zip'), num=16, res=16, labels=[i % 3 for i in range(16)])}
    results, snapshots = {}, {}
    for name, (extra, dataset) in runs.items():
        run_outdir = os.path.join(outdir, name)
        args = [f'--outdir={run_outdir}', f'--data={data[dataset]}', '--cfg=tiny', '--batch=8', '--kimg=0.016',
                '--tick=0.008', '--snap=1', '--metrics=none', '--device=cpu', '--workers=0', '--seed=0']
        args += [a.format(asa_snapshot=snapshots.get('asa', '')) for a in extra]
        try:
            train.main(args, standalone_mode=False)
            run_dir = glob.glob(os.path.join(run_outdir, '*'))[0]
            snapshots[name] = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
            with open(snapshots[name], 'rb') as f:
                snap = pickle.load(f)
            state = snap['asa_plugin']['state']['asa']
            trackers = {kind: None if t is None else dict(num_updates=t['num_updates'], num_classes=t['num_classes'],
                        trace=float(t['cov'].diagonal(dim1=-2, dim2=-1).sum()), finite=bool(torch.isfinite(t['cov']).all()),
                        plain=isinstance(t['cov'], torch.Tensor)) for kind, t in state['trackers'].items()}
            with open(os.path.join(run_dir, 'stats.jsonl')) as f:
                ticks = [json.loads(line) for line in f if line.strip()]
            keys = sorted(set().union(*ticks))
            results[name] = dict(ok=True, trackers=trackers, D_mentions_plugin=b'asa_plugin' in pickle.dumps(snap['D']),
                                 stats_keys=keys, ticks=ticks)
        except BaseException:
            results[name] = dict(ok=False, error=traceback.format_exc()[-3000:])
    print('RESULTS ' + json.dumps(results))
''')

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('asa_train')
    proc = subprocess.run([sys.executable, '-c', DRIVER, str(tmp), json.dumps(RUNS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    line = [l for l in proc.stdout.splitlines() if l.startswith('RESULTS ')]
    assert line, f'driver failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return json.loads(line[-1][len('RESULTS '):])


@pytest.mark.parametrize('name', ['asa', 'ada+asa', 'per_class'])
def test_one_tick(runs, name):
    r = runs[name]
    assert r['ok'], r.get('error')
    for kind in ('real', 'fake'):
        t = r['trackers'][kind]
        assert t is not None and t['num_updates'] > 0 and t['plain'] and t['finite'] and t['trace'] > 0, (kind, t)
        assert t['num_classes'] == (3 if name == 'per_class' else 1)
    assert not r['D_mentions_plugin']
    for key in ('ASA/lambda', 'ASA/q_real', 'ASA/q_fake', 'ASA/margin_real', 'ASA/margin_fake', 'ASA/q_max',
                'ASA/margin_max', 'ASA/trace_real', 'ASA/trace_fake', 'ASA/skipped_real'):
        assert key in r['stats_keys'], (key, r['stats_keys'])


def test_q_and_margin_stay_bounded(runs):
    # Defaults (cov_mode=batch, form=moderated, unconditional D): q is the variance of D's logits
    # within one batch, so its tick mean is at most the variance of all real scores of the tick; the
    # moderated margin |l - l/k| is below |l|, so its mean is at most the RMS of the scores (docs/asa.md §1).
    r = runs['asa']
    assert r['ok'], r.get('error')
    for tick in r['ticks']:
        for kind in ('real', 'fake'):
            scores = tick[f'Loss/scores/{kind}']
            rms2 = scores['mean'] ** 2 + scores['std'] ** 2
            q, margin = tick[f'ASA/q_{kind}']['mean'], tick[f'ASA/margin_{kind}']['mean']
            assert 0 < q <= scores['std'] ** 2 * (1 + 1e-3) + 1e-9, (kind, q, scores)
            assert 0 < margin <= rms2 ** 0.5 * (1 + 1e-3), (kind, margin, scores)
            assert tick['ASA/margin_max']['mean'] >= margin and tick['ASA/q_max']['mean'] >= q


def test_resume_continues_tracker_state(runs):
    first, resumed = runs['asa'], runs['resume']
    assert first['ok'], first.get('error')
    assert resumed['ok'], resumed.get('error')
    for kind in ('real', 'fake'):
        # A fresh tracker would count only the resumed run's updates.
        assert resumed['trackers'][kind]['num_updates'] > first['trackers'][kind]['num_updates']

#----------------------------------------------------------------------------

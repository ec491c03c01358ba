"""Training loop end to end on the CPU: the run folder of a 2-tick CLI run, exact resume, and a
2-process gloo run whose ranks end with identical parameters."""

import glob
import json
import os
import re
import subprocess
import sys

import PIL.Image
import pytest
import torch

from _training_utils import ROOT, make_zip, tiny_options

# ADA with p moving every iteration, plus ASA (D features, covariance tracker): plugin state
# and random streams must survive a resume.
AUG = 'ada:bgc,interval=1,kimg=0.1+asa'

STATUS_RE = re.compile(r'^tick \d+\s+kimg [\d.]+/[\d.]+\s+time .+ sec/kimg [\d.]+\s+eta (-|\d.*)\s+augment \d\.\d{3}', re.M)
STATS_KEYS = ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss', 'Loss/pl_penalty', 'Loss/G/reg', 'Loss/scores/real',
              'Loss/signs/real', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/D/reg', 'Progress/tick', 'Progress/kimg',
              'Timing/total_sec', 'Timing/sec_per_tick', 'Timing/sec_per_kimg', 'Timing/maintenance_sec',
              'Resources/cpu_mem_gb', 'Resources/peak_gpu_mem_gb', 'Progress/augment', 'Timing/total_hours',
              'Timing/total_days', 'Timing/Gmain', 'Timing/Greg', 'Timing/Dmain', 'Timing/Dreg']


def _load_pkl(path):
    import legacy
    with open(path, 'rb') as f:
        return legacy.load_network_pkl(f)


def _state_dicts_equal(a, b):
    return [name for name in a if not torch.equal(a[name], b[name])]

#----------------------------------------------------------------------------
# The real CLI (in-process) for 2 ticks with --cfg=tiny: every file of the run folder.

def test_cli_two_tick_run_folder(tmp_path, small_grids):
    import train
    from training import checkpoint
    data = make_zip(str(tmp_path / 'tiny.zip'))
    outdir = str(tmp_path / 'runs')
    train.main(['--outdir', outdir, '--cfg=tiny', '--data', data, '--kimg=0.016', '--tick=0.008', '--batch=8', '--snap=1',
                '--workers=0', '--device=cpu', '--metrics=none', '--aug=ada', '--seed=0'], standalone_mode=False)
    run_dirs = glob.glob(os.path.join(outdir, '00000-*'))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    names = sorted(os.listdir(run_dir))
    # Two ticks within the first kimg: upstream's names for the first, exact-kimg names for the second.
    for expected in ['training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png', 'fakes000000.png',
                     'fakes000000.016.png', 'network-snapshot-000000.pkl', 'network-snapshot-000000.pkl.sha256',
                     'training-state-000000.pt', 'training-state-000000.pt.sha256', 'network-snapshot-000000.016.pkl',
                     'network-snapshot-000000.016.pkl.sha256', 'training-state-000000.016.pt', 'training-state-000000.016.pt.sha256']:
        assert expected in names, f'{expected} missing from {names}'
    assert not [n for n in names if n.endswith('.tmp')], names

    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['batch_size'] == 8 and options['run_dir'] == run_dir

    log = open(os.path.join(run_dir, 'log.txt')).read()
    assert len(STATUS_RE.findall(log)) == 2, log[-2000:]
    assert 'Loading training set...' in log

    lines = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert len(lines) == 2
    for stats in lines:
        assert list(stats)[:len(STATS_KEYS)] == STATS_KEYS
        assert isinstance(stats['timestamp'], float)
        for key in STATS_KEYS:
            assert set(stats[key]) == {'num', 'mean', 'std'} and stats[key]['num'] >= 1
    assert [s['Progress/tick']['mean'] for s in lines] == [0, 1]
    assert lines[-1]['Progress/kimg']['mean'] == pytest.approx(0.016)

    for name in ['reals.png', 'fakes_init.png', 'fakes000000.png']:
        image = PIL.Image.open(os.path.join(run_dir, name))
        assert image.mode == 'RGB' and image.size == (4 * 16, 2 * 16)

    pkl = os.path.join(run_dir, 'network-snapshot-000000.016.pkl')
    assert checkpoint.verify(pkl) and checkpoint.verify(os.path.join(run_dir, 'training-state-000000.016.pt'))
    assert torch.load(os.path.join(run_dir, 'training-state-000000.pt'), weights_only=True)['progress']['cur_nimg'] == 8
    snapshot = _load_pkl(pkl)
    assert list(snapshot)[:5] == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    for key in ['G', 'D', 'G_ema', 'augment_pipe']:
        assert isinstance(snapshot[key], torch.nn.Module)
        assert not any(p.requires_grad for p in snapshot[key].parameters())
    assert snapshot['training_set_kwargs']['path'] == data and snapshot['training_set_kwargs']['resolution'] == 16
    assert snapshot['asa_plugin']['spec'].startswith('ada')
    img = snapshot['G_ema'](torch.randn([2, snapshot['G_ema'].z_dim]), torch.zeros([2, 0]))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    state = torch.load(os.path.join(run_dir, 'training-state-000000.016.pt'), weights_only=True)
    assert state['progress']['cur_nimg'] == 16 and state['progress']['cur_tick'] == 2
    assert set(state['optimizers']) == {'G', 'D'} and 'pl_mean' in state['loss']

#----------------------------------------------------------------------------
# Interrupted after 2 iterations and resumed for the 3rd == 3 iterations in one go, bit for bit
# (networks, EMA, optimizers via the next step, ADA p, pl_mean, RNG, data order).

def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, small_grids, monkeypatch):
    import dnnlib
    from metrics import metric_main
    from training.training_loop import training_loop
    # The uninterrupted run also evaluates a (stand-in) metric at every snapshot, which draws random
    # numbers: tick work must not shift the training's random streams.
    evaluated = []
    def fake_metric(metric, G, dataset_kwargs, num_gpus, rank, device, verbose=False):
        evaluated.append(torch.randn([1000]).sum().item() + G.z_dim)
        return dnnlib.EasyDict(results=dnnlib.EasyDict(fid50k_full=float(len(evaluated))), metric=metric, total_time=0.0,
                               total_time_str='0s', num_gpus=num_gpus)
    monkeypatch.setattr(metric_main, 'calc_metric', fake_metric)
    data = make_zip(str(tmp_path / 'tiny.zip'))
    runs = {}
    ticks = []
    abort_at_tick_1 = lambda: ticks.append(0) or len(ticks) == 2  # Same options, stopped early (like a kill).
    for name in ['full', 'part', 'resumed']:
        run_dir = str(tmp_path / name)
        os.makedirs(run_dir)
        extra = dict(abort_fn=abort_at_tick_1) if name == 'part' else {}
        if name == 'resumed':
            extra = dict(resume_pkl=os.path.join(runs['part'], 'network-snapshot-000000.016.pkl'),
                         resume_state=os.path.join(runs['part'], 'training-state-000000.016.pt'))
        metrics = ['fid50k_full'] if name == 'full' else []
        # APA (with two batch_gpu rounds) checks that its pseudo reals, the G step's fakes, need no saved state.
        training_loop(rank=0, **tiny_options(run_dir, data, kimg=0.024, tick=0.008, aug=AUG + '+apa:p=0.5,interval=1,kimg=0.1',
                                             batch_gpu=4, metrics=metrics, **extra))
        runs[name] = run_dir
    metric_lines = [json.loads(line) for line in open(os.path.join(runs['full'], 'metric-fid50k_full.jsonl'))]
    assert len(evaluated) == 3 and [m['results']['fid50k_full'] for m in metric_lines] == [1.0, 2.0, 3.0]
    assert metric_lines[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    full = _load_pkl(os.path.join(runs['full'], 'network-snapshot-000000.024.pkl'))
    resumed = _load_pkl(os.path.join(runs['resumed'], 'network-snapshot-000000.pkl')) # Its first: kimg 0.024.
    part = _load_pkl(os.path.join(runs['part'], 'network-snapshot-000000.016.pkl'))
    for key in ['G', 'D', 'G_ema']:
        assert _state_dicts_equal(full[key].state_dict(), resumed[key].state_dict()) == [], key
        assert _state_dicts_equal(full[key].state_dict(), part[key].state_dict()) != [], f'{key}: the 3rd step changed nothing'
    p_full = float(full['augment_pipe'].p)
    assert p_full == float(resumed['augment_pipe'].p) and p_full != float(part['augment_pipe'].p)
    state_full = torch.load(os.path.join(runs['full'], 'training-state-000000.024.pt'), weights_only=True)
    state_resumed = torch.load(os.path.join(runs['resumed'], 'training-state-000000.pt'), weights_only=True)
    assert torch.equal(state_full['loss']['pl_mean'], state_resumed['loss']['pl_mean'])
    assert state_full['progress'] == state_resumed['progress']
    log = [json.loads(line) for line in open(os.path.join(runs['resumed'], 'stats.jsonl'))]
    assert log[0]['Progress/tick']['mean'] == 2  # Ticks and kimg continue instead of restarting at 0.

#----------------------------------------------------------------------------
# Runs tests/_training_utils.py as two gloo ranks with a file-store rendezvous; returns their output.

def _run_two_ranks(tmp_path, **job) -> list:
    init = f'file://{tmp_path}/init'
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', '_training_utils.py'), json.dumps(dict(
                 rank=rank, world=2, init_method=init, out_dir=str(tmp_path), **job))],
                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    return outputs

#----------------------------------------------------------------------------
# Two gloo processes: rank 0's state is broadcast, gradients averaged; both end identical.

def test_two_process_gloo_ranks_identical(tmp_path):
    data = make_zip(str(tmp_path / 'tiny.zip'))
    run_dir = str(tmp_path / 'run')
    os.makedirs(run_dir)
    options = tiny_options(run_dir, data, kimg=0.016, tick=0.008, aug=AUG, num_gpus=2, batch_size=8, batch_gpu=4)
    _run_two_ranks(tmp_path, options=options)
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]
    for key in ['G', 'D', 'G_ema']:
        assert _state_dicts_equal(ranks[0][key], ranks[1][key]) == [], key
    assert os.path.isfile(os.path.join(run_dir, 'network-snapshot-000000.pkl'))
    lines = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert lines[0]['Loss/G/loss']['num'] == 8  # Statistics combine both ranks (4 + 4 samples).

#----------------------------------------------------------------------------
# Exact resume with 2 gloo processes and ADA + DAG + ASA: interrupted after 2 iterations and resumed
# == uninterrupted, on both ranks, bit for bit (G, D, G_ema, ADA p, DAG heads and their random
# views, ASA's covariance trackers). Both ranks' plugin state and RNG must come back, not rank 0's.
# One process pair runs all three in turn (part, full, resumed) to pay the startup only once.

AUG_DIST = 'ada:bgc,interval=1,kimg=0.1+dag:translation+asa:attention=true'   # CBAM: module state


def _nested_diff(a, b, path=''):
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f'{path}: keys {sorted(a)} vs {sorted(b)}']
        return [d for key in a for d in _nested_diff(a[key], b[key], f'{path}.{key}')]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f'{path}: length {len(a)} vs {len(b)}']
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _nested_diff(x, y, f'{path}[{i}]')]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else [path]
    return [] if type(a) is type(b) and a == b else [f'{path}: {a!r} vs {b!r}']


def test_two_process_gloo_exact_resume_with_plugin_state(tmp_path):
    data = make_zip(str(tmp_path / 'tiny.zip'))
    common = dict(kimg=0.024, tick=0.008, aug=AUG_DIST, num_gpus=2, batch_size=8, batch_gpu=4, image_snapshot_ticks=0)
    runs = []
    for name in ['part', 'full', 'resumed']:
        os.makedirs(tmp_path / name)
        extra = {}
        if name == 'resumed':
            extra = dict(resume_pkl=str(tmp_path / 'part' / 'network-snapshot-000000.016.pkl'),
                         resume_state=str(tmp_path / 'part' / 'training-state-000000.016.pt'))
        runs.append(dict(name=name, options=tiny_options(str(tmp_path / name), data, **common, **extra),
                         abort_at_tick=1 if name == 'part' else None))
    outputs = _run_two_ranks(tmp_path, runs=runs)
    assert 'Exact resume from' in outputs[0] and 'not bit-exact' not in outputs[0]
    got = {(name, r): torch.load(tmp_path / f'{name}_rank{r}.pt', weights_only=True) for name in ['part', 'full', 'resumed'] for r in range(2)}
    for r in range(2):
        full, resumed, part = got['full', r], got['resumed', r], got['part', r]
        for key in ['G', 'D', 'G_ema', 'augment_modules']:
            assert _state_dicts_equal(full[key], resumed[key]) == [], (r, key)
        for key in ['G', 'D', 'G_ema']:
            assert _state_dicts_equal(full[key], part[key]) != [], f'rank {r} {key}: the 3rd step changed nothing'
        assert full['plugin_state']['ada']['controller']['p'] != part['plugin_state']['ada']['controller']['p']  # ADA's p moved
        assert _nested_diff(full['plugin_state'], resumed['plugin_state']) == [], r
        assert set(full['plugin_state']) == {'ada', 'dag', 'asa'}
        assert not torch.equal(full['plugin_state']['dag']['head_weight'], part['plugin_state']['dag']['head_weight'])
        trackers = {k: v for k, v in full['plugin_state']['asa']['trackers'].items() if v is not None}
        assert trackers and _nested_diff(full['plugin_state']['asa'], part['plugin_state']['asa']) != []
        assert _state_dicts_equal(full['augment_modules'], part['augment_modules']) != [], f'rank {r}: CBAM did not train'
    # One state path for the augmentation: the per-rank plugin states (they cover its modules).
    state = torch.load(tmp_path / 'part' / 'training-state-000000.016.pt', weights_only=True)
    assert 'augment_modules' not in state and len(state['plugin_states']) == 2
    # The ranks keep their own augmentation streams (DAG's random views), restored per rank.
    assert _nested_diff(got['full', 0]['plugin_state']['dag']['rng'], got['full', 1]['plugin_state']['dag']['rng']) != []
    assert _state_dicts_equal(got['full', 0]['G'], got['full', 1]['G']) == []

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# An options dict as upstream's train.py writes it (no aug_spec): the pipe it names is the one
# that trains, here bgcfnc (cutout included), with its target and speed.

def test_upstream_keyed_options_train_with_their_pipe(tmp_path, small_grids):
    from asa_plugin import ada
    from training.training_loop import training_loop
    data = make_zip(str(tmp_path / 'tiny.zip'))
    options = tiny_options(str(tmp_path), data, kimg=0.008, tick=0.008)
    del options['aug_spec']
    options.update(augment_kwargs=dict(class_name='training.augment.AugmentPipe', **ada.pipe_kwargs('bgcfnc')),
                   augment_p=0, ada_target=0.7, ada_kimg=100)
    training_loop(rank=0, **options)
    snap = _load_pkl(os.path.join(str(tmp_path), 'network-snapshot-000000.pkl'))
    assert snap['asa_plugin']['spec'] == 'ada:bgcfnc,target=0.7,kimg=100'
    assert snap['augment_pipe'].cutout == 1.0 and snap['augment_pipe'].imgfilter == 1.0

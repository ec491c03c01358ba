"""Fault injection on the CPU: kill -9 during a snapshot write, corrupt snapshots, NaN in D,
disk full mid-run, broken datasets, and a rank that dies in a 2-process gloo run."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import click
import pytest
import torch

from _training_utils import ROOT, make_zip, tiny_options


def _child(cfg):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', '_training_utils.py'), json.dumps(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _load_pkl(path):
    import legacy
    with open(path, 'rb') as f:
        return legacy.load_network_pkl(f)

#----------------------------------------------------------------------------
# One finished 1-iteration run, shared by the tests that only read or damage its files.

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    from training import image_grid
    from training.training_loop import training_loop
    root = tmp_path_factory.mktemp('finished')
    data = make_zip(str(root / 'tiny.zip'))
    run_dir = root / 'runs' / '00000-tiny'
    run_dir.mkdir(parents=True)
    grid_shape = image_grid.grid_shape
    image_grid.grid_shape = lambda width, height: (4, 2)
    try:
        training_loop(rank=0, **tiny_options(str(run_dir), data, kimg=0.008, tick=0.008))
    finally:
        image_grid.grid_shape = grid_shape
    return str(run_dir), data

#----------------------------------------------------------------------------
# kill -9 while the second snapshot is half written: the first pair stays loadable and
# --resume=latest (through the CLI) picks it and continues.

def test_kill_during_snapshot_write_then_resume_latest(tmp_path, small_grids):
    from training import checkpoint
    data = make_zip(str(tmp_path / 'tiny.zip'))
    outdir = tmp_path / 'runs'
    run_dir = outdir / '00000-tiny'
    run_dir.mkdir(parents=True)
    marker = str(tmp_path / 'stalled')
    proc = _child(dict(options=tiny_options(str(run_dir), data, kimg=10, tick=0.008), out_dir=str(tmp_path),
                       fault='stall_pkl_write', marker=marker))
    try:
        deadline = time.time() + 240
        while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert os.path.exists(marker), proc.communicate(timeout=5)[0][-3000:] if proc.poll() is not None else 'timed out'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    names = os.listdir(run_dir)
    assert any(n.endswith('.partial.tmp') for n in names), names  # The torn write is really there...
    pkl, state = checkpoint.find_latest(str(outdir))              # ...and ignored.
    assert pkl == str(run_dir / 'network-snapshot-000000.pkl') and state == str(run_dir / 'training-state-000000.pt')
    assert isinstance(_load_pkl(pkl)['G_ema'], torch.nn.Module)

    import train
    train.main(['--outdir', str(outdir), '--cfg=tiny', '--data', data, '--resume=latest', '--kimg=0.024', '--tick=0.008',
                '--batch=8', '--snap=1', '--workers=0', '--device=cpu', '--metrics=none', '--aug=noaug'], standalone_mode=False)
    resumed = [d for d in os.listdir(outdir) if d.startswith('00001-')]
    assert len(resumed) == 1
    log = open(outdir / resumed[0] / 'log.txt').read()
    assert 'Exact resume from' in log and 'training-state-000000.pt' in log
    # The resumed run's first snapshot (kimg 0.016) takes upstream's name in its folder, its last the exact one.
    assert checkpoint.find_latest(str(outdir))[0] == str(outdir / resumed[0] / 'network-snapshot-000000.024.pkl')

#----------------------------------------------------------------------------
# A corrupt newest snapshot is skipped by --resume=latest and refused when named directly; a
# state that belongs to another snapshot is never paired with it.

def test_corrupt_latest_snapshot_is_skipped_or_refused(finished_run, tmp_path):
    from training import checkpoint
    src, _data = finished_run
    outdir = tmp_path / 'runs'
    good, bad = outdir / '00000-tiny', outdir / '00001-tiny'
    shutil.copytree(src, good)
    shutil.copytree(src, bad)
    pkl = bad / 'network-snapshot-000000.pkl'
    raw = bytearray(pkl.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pkl.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match='corrupt'):
        latest = checkpoint.find_latest(str(outdir))
    assert latest == (str(good / 'network-snapshot-000000.pkl'), str(good / 'training-state-000000.pt'))
    with pytest.raises(FileNotFoundError, match='does not match its .sha256'):
        checkpoint.check_snapshot(str(pkl))

    # Newest pickle intact but its state from elsewhere: resume weights only from it? No: the
    # older complete pair wins over a mismatched pair.
    shutil.copy(good / 'network-snapshot-000000.pkl', pkl)
    shutil.copy(good / 'network-snapshot-000000.pkl.sha256', str(pkl) + '.sha256')
    state = torch.load(bad / 'training-state-000000.pt', weights_only=True)
    state['snapshot_sha256'] = '0' * 64
    torch.save(state, bad / 'training-state-000000.pt')
    (bad / 'training-state-000000.pt.sha256').write_text(f'{checkpoint.sha256_file(str(bad / "training-state-000000.pt"))}  x\n')
    assert checkpoint.find_latest(str(outdir))[0] == str(good / 'network-snapshot-000000.pkl')

    # Nothing usable at all: a clear error.
    for pkl_path in [good / 'network-snapshot-000000.pkl', pkl]:
        with open(pkl_path, 'ab') as f:
            f.write(b'x')
    with pytest.raises(FileNotFoundError, match='no usable network-snapshot'), pytest.warns(UserWarning):
        checkpoint.find_latest(str(outdir))

#----------------------------------------------------------------------------
# NaN out of D in the first training step: reported with the phase, counted, the step skipped (default)
# or training stopped (nonfinite='stop').

def _nan_on_first_D_call(monkeypatch):
    from training import loop_setup
    build = loop_setup.build_networks
    def build_with_fault(*args, **kwargs):
        G, D, G_ema = build(*args, **kwargs)
        calls = [0]
        def faulty_forward(*f_args, **f_kwargs):
            calls[0] += 1  # Call 1 is the module summary; call 2 is Gmain's.
            if calls[0] < 2:
                return type(D).forward(D, *f_args, **f_kwargs)
            del D.forward  # Once only; also keeps D picklable for the snapshot.
            return D.forward(*f_args, **f_kwargs) * float('nan')
        D.forward = faulty_forward
        return G, D, G_ema
    monkeypatch.setattr(loop_setup, 'build_networks', build_with_fault)


def test_nan_in_D_is_skipped_and_counted(tmp_path, small_grids, monkeypatch, capsys):
    from training.training_loop import training_loop
    _nan_on_first_D_call(monkeypatch)
    data = make_zip(str(tmp_path / 'tiny.zip'))
    run_dir = str(tmp_path)
    training_loop(rank=0, **tiny_options(run_dir, data, kimg=0.016, tick=0.008))
    assert 'non-finite loss or gradient in phase Gmain, step 0' in capsys.readouterr().out
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert stats[-1]['Nonfinite/skipped_steps']['mean'] == 1 and stats[-1]['Nonfinite/Gmain']['mean'] == 1
    G = _load_pkl(os.path.join(run_dir, 'network-snapshot-000000.pkl'))['G']
    assert all(torch.isfinite(p).all() for p in G.parameters())


def test_nan_in_D_stops_when_asked(tmp_path, small_grids, monkeypatch):
    from training.nonfinite import NonFiniteError
    from training.training_loop import training_loop
    _nan_on_first_D_call(monkeypatch)
    data = make_zip(str(tmp_path / 'tiny.zip'))
    with pytest.raises(NonFiniteError, match='phase Gmain, step 0'):
        training_loop(rank=0, **tiny_options(str(tmp_path), data, kimg=0.016, tick=0.008, nonfinite='stop'))

#----------------------------------------------------------------------------
# The disk fills up after the first tick: a clear error naming the file, and the first
# snapshot pair still verifies; no temp files are left behind.

def test_disk_full_mid_run_keeps_earlier_snapshots(tmp_path, small_grids, monkeypatch):
    from training import checkpoint
    from training.training_loop import training_loop
    data = make_zip(str(tmp_path / 'tiny.zip'))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    full = [False]
    real_fsync = os.fsync
    def fsync(fd):
        if full[0]:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_fsync(fd)
    monkeypatch.setattr(checkpoint.os, 'fsync', fsync)
    def fill_disk(cur_kimg, total_kimg):
        full[0] = True
    with pytest.raises(checkpoint.CheckpointWriteError, match='disk is full'):
        training_loop(rank=0, **tiny_options(str(run_dir), data, kimg=0.024, tick=0.008, progress_fn=fill_disk))
    full[0] = False
    assert checkpoint.verify(str(run_dir / 'network-snapshot-000000.pkl'))
    assert checkpoint.verify(str(run_dir / 'training-state-000000.pt'))
    assert not [n for n in os.listdir(run_dir) if n.endswith('.tmp')]

#----------------------------------------------------------------------------
# Broken datasets are refused by the CLI before training, naming the file.

def _cli(tmp_path, data, *extra):
    import train
    train.main(['--outdir', str(tmp_path / 'runs'), '--cfg=tiny', '--data', data, '--kimg=0.008', '--workers=0',
                '--device=cpu', '--metrics=none', *extra], standalone_mode=False)


def test_truncated_dataset_zip_is_refused(tmp_path):
    path = make_zip(str(tmp_path / 'tiny.zip'))
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises((click.ClickException, OSError), match='tiny.zip'):
        _cli(tmp_path, path)
    assert not os.path.exists(tmp_path / 'runs') or not os.listdir(tmp_path / 'runs')


def test_wrong_shaped_labels_are_refused(tmp_path):
    labels = [[1.0, 0.0]] * 16 + [[1.0, 0.0, 0.0]] * 16
    path = make_zip(str(tmp_path / 'labels.zip'), labels=labels)
    with pytest.raises((click.ClickException, OSError), match='label'):
        _cli(tmp_path, path, '--cond=1')

#----------------------------------------------------------------------------
# Rank 1 dies (SIGKILL) after its first tick: rank 0 stops with a clear error, no hang.

def test_rank_death_gives_clean_error_without_hang(tmp_path):
    data = make_zip(str(tmp_path / 'tiny.zip'))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    options = tiny_options(str(run_dir), data, kimg=10, tick=0.008, num_gpus=2, batch_size=8, batch_gpu=4)
    init = f'file://{tmp_path}/init'
    procs = [_child(dict(rank=rank, world=2, init_method=init, options=options, out_dir=str(tmp_path), fault='die_rank1', timeout_s=60))
             for rank in range(2)]
    start = time.time()
    try:
        out0 = procs[0].communicate(timeout=240)[0]
        procs[1].wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode not in (0, None)
    assert 'another training process probably died' in out0, out0[-3000:]
    assert time.time() - start < 240

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# SIGTERM (what schedulers send before SIGKILL): the run finishes its iteration, writes a final
# snapshot and training state, and exits with status 0.

def test_sigterm_writes_final_snapshot_and_exits_cleanly(tmp_path):
    from training import checkpoint
    data = make_zip(str(tmp_path / 'tiny.zip'))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    # Snapshots only at tick 0 and at the end: the final one must come from the SIGTERM.
    proc = _child(dict(options=tiny_options(str(run_dir), data, kimg=10, tick=0.008, network_snapshot_ticks=1000,
                                            image_snapshot_ticks=1000), out_dir=str(tmp_path)))
    try:
        state = run_dir / 'training-state-000000.pt'
        deadline = time.time() + 240
        while not os.path.exists(str(state) + '.sha256') and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        first = torch.load(state, weights_only=True)['progress']['cur_nimg']
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert 'Aborting on SIGTERM' in out
    pkl, state_path = checkpoint.find_latest(str(tmp_path))
    assert torch.load(state_path, weights_only=True)['progress']['cur_nimg'] > first
    # The final snapshot falls in the same whole kimg as the first: it gets its own name, and the
    # first pair (and its grid) stay as they were.
    assert os.path.basename(pkl) == f'network-snapshot-{checkpoint.kimg_tag(torch.load(state_path, weights_only=True)["progress"]["cur_nimg"], exact=True)}.pkl'
    assert torch.load(state, weights_only=True)['progress']['cur_nimg'] == first and checkpoint.verify(str(state))
    assert checkpoint.snapshot_status(str(run_dir / 'network-snapshot-000000.pkl'))[0] == 'exact'

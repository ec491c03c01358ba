"""Crash-safe files of a run folder: atomic writes, checksums, and finding the newest complete snapshot.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over the
final name, so a kill at any instant leaves either the old file or the new one, never a torn one.
Snapshots and training states get a `<file>.sha256` sidecar (the `sha256sum` format) written after
the file itself; a snapshot counts as complete once its sidecar matches, or once a training state
that records the snapshot's digest matches it (a kill between the files and their sidecars).
Snapshot and grid names never repeat within a run (see `fresh_path`), so nothing is ever replaced.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import os
import pickle
import re
import sys
import warnings

import torch

import dnnlib

# Upstream's name network-snapshot-NNNNNN.pkl (kimg, rounded down), or NNNNNN.FFF when that name was
# already taken by an earlier snapshot of the same run (exact kimg; e.g. a SIGTERM at 4.7 kimg).
SNAPSHOT_RE = re.compile(r'network-snapshot-(\d+)(?:\.(\d{3}))?\.pkl$')

#----------------------------------------------------------------------------
# Raised when the run folder cannot be written (disk full, read-only, removed); names the file.

class CheckpointWriteError(RuntimeError):
    pass

#----------------------------------------------------------------------------
# Raised when no usable snapshot exists or a given one fails verification.

class CheckpointNotFoundError(FileNotFoundError):
    pass

#----------------------------------------------------------------------------
# Writes `data` (bytes) to `path` atomically: temp file in the same folder, fsync, os.replace, and
# an fsync of the folder so that the rename itself survives a power loss.

def atomic_write_bytes(path: str, data: bytes) -> None:
    try:
        dnnlib.util.atomic_write_bytes(path, data)
    except OSError as e:
        raise _write_error('write', path, e) from e


def _write_error(verb: str, path: str, e: OSError) -> CheckpointWriteError:
    reason = 'the disk is full' if e.errno in (errno.ENOSPC, errno.EDQUOT) else 'the folder is not writable or was removed'
    return CheckpointWriteError(f'Could not {verb} {path}: {e.strerror or e} ({reason}). '
                                f'Files written earlier are intact; free space or fix the folder and resume with --resume=latest.')


#----------------------------------------------------------------------------
# Atomic writers for the formats a run folder holds.

def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_append_line(path: str, line: str) -> None:
    # One O_APPEND write() of the whole line, then fsync: a kill cannot interleave or half-write it,
    # and rewriting the file every tick would cost O(run length). A line torn by a power loss is
    # closed with a newline first so that later lines stay parseable.
    try:
        dnnlib.util.append_line(path, line)
    except OSError as e:
        raise _write_error('append to', path, e) from e


def atomic_save_image(path: str, pil_image) -> None:
    buf = io.BytesIO()
    pil_image.save(buf, format='PNG')
    atomic_write_bytes(path, buf.getvalue())

#----------------------------------------------------------------------------
# Checksummed files: the sidecar is written after the file, so its presence marks completion.

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


sha256_file = dnnlib.util.sha256_file


def verify(path: str, required: bool = True) -> bool:
    """True when `path` matches its `.sha256` sidecar. Without a sidecar: False if `required`, else True."""
    sidecar = path + '.sha256'
    if not os.path.isfile(path):
        return False
    if not os.path.isfile(sidecar):
        return not required
    with open(sidecar, 'r', encoding='utf-8') as f:
        expected = f.read().split()
    return len(expected) >= 1 and expected[0] == sha256_file(path)

#----------------------------------------------------------------------------
# File names that never repeat within a run: upstream's `<prefix>NNNNNN<suffix>` for the first file
# of each whole kimg, the exact `<prefix>NNNNNN.FFF<suffix>` for later ones (ticks under 1 kimg, a
# final snapshot on SIGTERM). A name is taken when the file, its sidecar or a companion exists.

def kimg_tag(cur_nimg: int, exact: bool = False) -> str:
    whole, frac = divmod(int(cur_nimg), 1000)
    return f'{whole:06d}.{frac:03d}' if exact and frac else f'{whole:06d}'


def fresh_path(run_dir: str, cur_nimg: int, template: str, companions: tuple = ()) -> str:
    """The first free name of `template` (e.g. 'fakes{}.png') for cur_nimg; never an existing file."""
    for tag in dict.fromkeys([kimg_tag(cur_nimg), kimg_tag(cur_nimg, exact=True)]):
        names = [t.format(tag) for t in (template,) + tuple(companions)]
        if not any(os.path.exists(os.path.join(run_dir, n + ext)) for n in names for ext in ('', '.sha256')):
            return os.path.join(run_dir, names[0])
    raise CheckpointWriteError(f'{os.path.join(run_dir, template.format(kimg_tag(cur_nimg, exact=True)))} already exists: '
                               f'another run wrote into this run folder; start a new run (--outdir) instead of overwriting it.')


def snapshot_nimg_from_name(pkl: str) -> int | None:
    """Images seen, from a snapshot's name: exact for NNNNNN.FFF names, a lower bound otherwise."""
    m = SNAPSHOT_RE.search(os.path.basename(pkl))
    return None if m is None else int(m.group(1)) * 1000 + int(m.group(2) or 0)

#----------------------------------------------------------------------------
# Snapshot pickle and training state, written as a pair: both files first, then both sidecars,
# so a kill anywhere leaves the pair either complete or visibly incomplete. The state records
# the digest of its snapshot so that it is never paired with a different network, and so that a
# pair killed before its sidecars still verifies.

def save_checkpoint(run_dir: str, cur_nimg: int, snapshot_data: dict, state: dict | None) -> str:
    pkl_path = fresh_path(run_dir, cur_nimg, 'network-snapshot-{}.pkl', companions=('training-state-{}.pt',))
    pkl_bytes = pickle.dumps(snapshot_data)
    pkl_digest = sha256_bytes(pkl_bytes)
    atomic_write_bytes(pkl_path, pkl_bytes)
    del pkl_bytes
    if state is not None:
        state_path = state_path_for(pkl_path)
        buf = io.BytesIO()
        torch.save(dict(state, snapshot_pkl=os.path.basename(pkl_path), snapshot_sha256=pkl_digest), buf)
        state_bytes = buf.getvalue()
        atomic_write_bytes(state_path, state_bytes)
    _write_sidecar(pkl_path, pkl_digest)
    if state is not None:
        _write_sidecar(state_path, sha256_bytes(state_bytes))
    return pkl_path


def _write_sidecar(path: str, digest: str) -> None:
    atomic_write_text(path + '.sha256', f'{digest}  {os.path.basename(path)}\n')


def _recorded_digest(path: str) -> str | None:
    try:
        with open(path + '.sha256', 'r', encoding='utf-8') as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return None


def _read_state(state_path: str) -> dict | None:
    try:
        state = torch.load(state_path, map_location='cpu', weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        warnings.warn(f'--resume: cannot read {state_path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}')
        return None
    return state if isinstance(state, dict) else None


def snapshot_status(pkl: str) -> tuple:
    """(status, training state or None) of a snapshot pickle, status one of
    'exact'      the pickle verifies and a training state that verifies records its digest;
    'weights'    the pickle verifies (sidecar), but has no usable training state;
    'unverified' no sidecar and no training state vouches for it (e.g. written by upstream);
    'corrupt'    its sidecar does not match: never used.
    A pickle whose verified training state records its digest counts as exact even without (or with
    a stale) sidecar: e.g. a pair killed before its sidecars were written (each file is atomic)."""
    pkl_verified = verify(pkl, required=True)
    state_path = state_path_for(pkl)
    state = None
    if state_path and os.path.isfile(state_path) and verify(state_path, required=False):
        state = _read_state(state_path)
    recorded = state.get('snapshot_sha256') if state is not None else None
    if recorded is not None and recorded == (_recorded_digest(pkl) if pkl_verified else sha256_file(pkl)):
        return 'exact', state_path
    if pkl_verified:
        return 'weights', None
    return ('corrupt' if os.path.isfile(pkl + '.sha256') else 'unverified'), None


def load_state(path: str, snapshot_pkl: str | None = None) -> dict:
    """Reads a training-state-*.pt with weights_only=True after verifying its checksum (and its pairing)."""
    if not verify(path, required=False):
        raise CheckpointNotFoundError(f'Training state {path} is missing or does not match its .sha256 file (truncated or corrupt); '
                                      f'resume from an earlier snapshot or use --resume=latest.')
    state = torch.load(path, map_location='cpu', weights_only=True)
    if snapshot_pkl is not None and os.path.isfile(snapshot_pkl) and state.get('snapshot_sha256') not in (None, sha256_file(snapshot_pkl)):
        raise CheckpointNotFoundError(f'Training state {path} belongs to {state.get("snapshot_pkl")}, not to {snapshot_pkl}; '
                                      f'pass the matching pair or use --resume=latest.')
    return state


def state_path_for(snapshot_pkl: str) -> str:
    m = SNAPSHOT_RE.search(os.path.basename(snapshot_pkl))
    if m is None:
        return ''
    tag = m.group(1) + (f'.{m.group(2)}' if m.group(2) else '')
    return os.path.join(os.path.dirname(snapshot_pkl), f'training-state-{tag}.pt')


def snapshot_kimg(pkl: str) -> float | None:
    """The true kimg of a snapshot: from its training state when that belongs to it, else from its name."""
    state_path = state_path_for(pkl)
    if state_path and os.path.isfile(state_path):
        try:
            state = torch.load(state_path, map_location='cpu', weights_only=True, mmap=True)
            if state.get('snapshot_pkl') == os.path.basename(pkl):
                return int(state['progress']['cur_nimg']) / 1000
        except (RuntimeError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, pickle.UnpicklingError):
            pass
    nimg = snapshot_nimg_from_name(pkl)
    return None if nimg is None else nimg / 1000

#----------------------------------------------------------------------------
# --resume=latest: the newest usable snapshot under `outdir` (a run folder or a folder of run
# folders). Runs are ordered by run id, snapshots by kimg. With `options` (the new run's), only
# runs whose training_options.json has the same dataset and options are considered (run_match.py);
# which run was picked, and why newer ones were skipped, is printed. Within the considered runs an
# exact pair wins over a weights-only snapshot, which wins over an unverified one.

def _runs_with_snapshots(outdir: str) -> list:
    """[(run_dir, [pkl, ...newest first])], newest run first; outdir itself counts as the oldest run."""
    by_run = {}
    for pkl in glob.glob(os.path.join(glob.escape(outdir), 'network-snapshot-*.pkl')) + \
               glob.glob(os.path.join(glob.escape(outdir), '*', 'network-snapshot-*.pkl')):
        if SNAPSHOT_RE.search(os.path.basename(pkl)):
            by_run.setdefault(os.path.dirname(pkl), []).append(pkl)
    def run_key(run_dir):
        m = re.match(r'(\d+)', os.path.basename(run_dir))
        return int(m.group(1)) if m and os.path.abspath(run_dir) != os.path.abspath(outdir) else -1
    return [(run_dir, sorted(pkls, key=snapshot_nimg_from_name, reverse=True))
            for run_dir, pkls in sorted(by_run.items(), key=lambda kv: run_key(kv[0]), reverse=True)]


def _best_snapshot(runs: list) -> tuple:
    """(pkl, state, status) of the best snapshot among `runs`; (None, None, None) when all are corrupt."""
    fallback = {}
    for _run_dir, pkls in runs:
        for pkl in pkls:
            status, state = snapshot_status(pkl)
            if status == 'exact':
                return pkl, state, status
            if status == 'corrupt':
                warnings.warn(f'--resume=latest: skipping {pkl}: it does not match its .sha256 (corrupt)')
            else:
                fallback.setdefault(status, pkl)
    for status in ('weights', 'unverified'):
        if status in fallback:
            return fallback[status], None, status
    return None, None, None


def find_latest(outdir: str, options: dict | None = None, note=None) -> tuple:
    """Returns ``(snapshot_pkl, training_state_pt or None)``; raises CheckpointNotFoundError if none is usable."""
    from training import run_match
    note = note or (lambda msg: print(msg, file=sys.stderr))
    if not os.path.isdir(outdir):
        raise CheckpointNotFoundError(f'--resume=latest: {outdir} is not a folder; pass --outdir of an earlier run.')
    runs = _runs_with_snapshots(outdir)
    total = len(runs)
    if options is not None and runs:
        runs = run_match.select_runs(runs, options, note)
    pkl, state, status = _best_snapshot(runs)
    if pkl is None:
        count = sum(len(pkls) for _, pkls in runs)
        where = f' of the {len(runs)} matching runs' if len(runs) < total else ''
        raise CheckpointNotFoundError(f'--resume=latest: no usable network-snapshot-*.pkl under {outdir} '
                                      f'({count} found{where}{", all corrupt" if count else ""}); pass --resume=<path of a .pkl>.')
    if status != 'exact':
        why = 'has no complete training state' if status == 'weights' else 'has no .sha256 to verify it (not written by this code?)'
        warnings.warn(f'--resume=latest: {pkl} {why}; resuming weights only (not exact)')
    return pkl, state

#----------------------------------------------------------------------------
# Verifies a user-given snapshot before use: a sidecar that does not match is refused.

def check_snapshot(path: str) -> None:
    if os.path.isfile(path) and not verify(path, required=False) and snapshot_status(path)[0] != 'exact':
        raise CheckpointNotFoundError(f'--resume: {path} does not match its .sha256 file, and no training state records its '
                                      f'digest (truncated or corrupt); use an earlier snapshot or --resume=latest.')

#----------------------------------------------------------------------------

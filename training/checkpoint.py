"""Crash-safe files of a run folder: atomic writes, checksums, and finding the newest complete snapshot.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over the
final name, so a kill at any instant leaves either the old file or the new one, never a torn one.
Snapshots and training states get a `<file>.sha256` sidecar (the `sha256sum` format) written after
the file itself; a snapshot counts as complete only once its sidecar exists and matches.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import os
import pickle
import re
import warnings

import torch

import dnnlib

SNAPSHOT_RE = re.compile(r'network-snapshot-(\d+)\.pkl$')

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
# Snapshot pickle and training state, written as a pair: both files first, then both sidecars,
# so a kill anywhere leaves the pair either complete or visibly incomplete. The state records
# the digest of its snapshot so that it is never paired with a different network.

def save_checkpoint(run_dir: str, kimg: int, snapshot_data: dict, state: dict | None) -> str:
    pkl_path = os.path.join(run_dir, f'network-snapshot-{kimg:06d}.pkl')
    pkl_bytes = pickle.dumps(snapshot_data)
    pkl_digest = sha256_bytes(pkl_bytes)
    atomic_write_bytes(pkl_path, pkl_bytes)
    del pkl_bytes
    if state is not None:
        state_path = os.path.join(run_dir, f'training-state-{kimg:06d}.pt')
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


def _state_matches(state_path: str, pkl_path: str) -> bool:
    try:
        state = torch.load(state_path, map_location='cpu', weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError, EOFError) as e:
        warnings.warn(f'--resume=latest: cannot read {state_path}: {e}')
        return False
    return state.get('snapshot_sha256') == _recorded_digest(pkl_path)


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
    return os.path.join(os.path.dirname(snapshot_pkl), f'training-state-{m.group(1)}.pt')

#----------------------------------------------------------------------------
# The newest usable snapshot under `outdir` (a run folder or a folder of run folders), by
# (run id, kimg), preferring in this order: a verified pickle with its verified, matching
# training state (exact resume); a verified pickle alone; a pickle without any sidecar (e.g.
# written by upstream). A pickle whose sidecar does not match is corrupt and always skipped.

def find_latest(outdir: str) -> tuple:
    """Returns ``(snapshot_pkl, training_state_pt or None)``; raises CheckpointNotFoundError if none is usable."""
    if not os.path.isdir(outdir):
        raise CheckpointNotFoundError(f'--resume=latest: {outdir} is not a folder; pass --outdir of an earlier run.')
    candidates = []
    for pkl in glob.glob(os.path.join(outdir, 'network-snapshot-*.pkl')) + glob.glob(os.path.join(outdir, '*', 'network-snapshot-*.pkl')):
        m = SNAPSHOT_RE.search(os.path.basename(pkl))
        run_dir = os.path.dirname(pkl)
        run_id = re.match(r'(\d+)', os.path.basename(run_dir)) if os.path.abspath(run_dir) != os.path.abspath(outdir) else None
        candidates.append(((int(run_id.group(1)) if run_id else -1, int(m.group(1))), pkl))
    candidates.sort(reverse=True)
    weights_only, unverified = None, None
    for _key, pkl in candidates:
        if not os.path.isfile(pkl + '.sha256'):
            unverified = unverified or pkl
            continue
        if not verify(pkl):
            warnings.warn(f'--resume=latest: skipping {pkl}: it does not match its .sha256 (corrupt)')
            continue
        state = state_path_for(pkl)
        if verify(state, required=True) and _state_matches(state, pkl):
            return pkl, state
        weights_only = weights_only or pkl
    if weights_only or unverified:
        pkl = weights_only or unverified
        why = 'has no complete training state' if weights_only else 'has no .sha256 to verify it (not written by this code?)'
        warnings.warn(f'--resume=latest: {pkl} {why}; resuming weights only (not exact)')
        return pkl, None
    raise CheckpointNotFoundError(f'--resume=latest: no usable network-snapshot-*.pkl under {outdir} '
                                  f'({len(candidates)} found, all corrupt); pass --resume=<path of a .pkl>.')

#----------------------------------------------------------------------------
# Verifies a user-given snapshot before use: a sidecar that does not match is refused.

def check_snapshot(path: str) -> None:
    if os.path.isfile(path) and not verify(path, required=False):
        raise CheckpointNotFoundError(f'--resume: {path} does not match its .sha256 file (truncated or corrupt); '
                                      f'use an earlier snapshot or --resume=latest.')

#----------------------------------------------------------------------------

"""The training runs of a quality benchmark: one train.py subprocess per (--aug spec, seed).

Each run trains in OUT/runs/<name>/ (train.py's --outdir, so a resumed segment is a second run
folder beside the first). Files of ours there: train.log (train.py's output, appended),
segments.jsonl (wall seconds and kimg of every training segment, for sec/kimg) and done.json
(written when train.py exits cleanly at the requested kimg). A run without done.json is
continued with --resume=latest; completed snapshots are recognised by their .sha256 sidecar.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time

from training import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, 'train.py')
TICK_RE = re.compile(r'tick\s+\d+\s+kimg\s+([0-9.]+)')

#----------------------------------------------------------------------------
# Which runs: every spec with every seed, under a folder name safe on any file system.

@dataclasses.dataclass(frozen=True)
class Run:
    spec:   str     # --aug spec
    seed:   int     # train.py --seed
    name:   str     # folder name under OUT/runs
    folder: str     # OUT/runs/<name>


def slug(spec: str) -> str:
    """'ada+asa:lambda0=1' -> 'ada+asa_lambda0=1' (letters, digits and . + = - kept)."""
    return re.sub(r'[^A-Za-z0-9.+=-]+', '_', spec).strip('_') or 'spec'


def plan_runs(specs: list, seeds: list, outdir: str) -> list:
    runs, used = [], set()
    for spec in specs:
        base = slug(spec)
        while base in used:         # two specs with the same slug still get their own folders
            base += '_'
        used.add(base)
        runs += [Run(spec, seed, f'{base}-seed{seed}', os.path.join(outdir, 'runs', f'{base}-seed{seed}')) for seed in seeds]
    return runs

#----------------------------------------------------------------------------
# What a run folder holds.

_kimg_cache: dict = {}  # (pkl path, mtime) -> true kimg; reading a training state costs a torch.load


def snapshots(run: Run) -> list:
    """[(kimg, pkl)] of the run's complete snapshots (sidecar written) over all its run folders,
    by true kimg (from the training state; names only say whole kimg)."""
    if not os.path.isdir(run.folder):
        return []
    found = []
    for sub in sorted(os.listdir(run.folder)):
        sub_dir = os.path.join(run.folder, sub)
        if not os.path.isdir(sub_dir):
            continue
        for name in os.listdir(sub_dir):
            pkl = os.path.join(sub_dir, name)
            if checkpoint.SNAPSHOT_RE.match(name) and os.path.isfile(pkl + '.sha256'):
                key = (pkl, os.path.getmtime(pkl))
                if key not in _kimg_cache:
                    _kimg_cache[key] = checkpoint.snapshot_kimg(pkl)
                found.append((_kimg_cache[key], pkl))
    return sorted(found)


def eval_points(snaps: list, eval_every: float, kimg: float) -> list:
    """[(nominal kimg, pkl)] to score: each snapshot on the --eval-every grid (a tick ends on the
    first batch past its length, so true kimg drift slightly), capped at the run's kimg. The first
    per grid point wins (a resumed segment writes its start again after one iteration), and the
    point 0 (one iteration in) is skipped."""
    points = {}
    for true_kimg, pkl in snaps:
        nominal = min(round(round(true_kimg / eval_every) * eval_every, 3), kimg)
        if true_kimg <= kimg + eval_every / 2 and nominal > 0:
            points.setdefault(nominal, pkl)
    return sorted(points.items())


def is_done(run: Run, kimg: float) -> bool:
    """Finished at `kimg` (or beyond: a later rerun may ask for fewer kimg than an earlier one)."""
    try:
        with open(os.path.join(run.folder, 'done.json'), 'rt') as f:
            if float(json.load(f)['kimg']) >= kimg:
                return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    snaps = snapshots(run)
    return bool(snaps) and snaps[-1][0] >= kimg


def mark_done(run: Run, kimg: float) -> None:
    import dnnlib
    dnnlib.util.atomic_write_text(os.path.join(run.folder, 'done.json'), json.dumps(dict(kimg=kimg)) + '\n')


def record_segment(run: Run, seconds: float, kimg_from: float, kimg_to: float) -> None:
    import dnnlib
    line = json.dumps(dict(seconds=round(seconds, 2), kimg_from=kimg_from, kimg_to=kimg_to, timestamp=time.time()))
    dnnlib.util.append_line(os.path.join(run.folder, 'segments.jsonl'), line)


def sec_per_kimg(run: Run):
    """Training wall seconds per kimg over all finished segments (start-up and snapshots included)."""
    seconds = kimg = 0.0
    try:
        with open(os.path.join(run.folder, 'segments.jsonl'), 'rt') as f:
            for line in f:
                try:
                    seg = json.loads(line)
                    seconds, kimg = seconds + float(seg['seconds']), kimg + float(seg['kimg_to']) - float(seg['kimg_from'])
                except (ValueError, KeyError, TypeError):
                    continue    # a torn line from a killed writer
    except OSError:
        return None
    return seconds / kimg if kimg > 0 else None


def last_tick_kimg(log_path: str):
    """kimg of the last tick line train.py printed, or None."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(max(os.path.getsize(log_path) - 8192, 0))
            tail = f.read().decode('utf-8', 'replace')
    except OSError:
        return None
    found = TICK_RE.findall(tail)
    return float(found[-1]) if found else None

#----------------------------------------------------------------------------
# One training segment as a subprocess.

def train_command(run: Run, data: str, cfg: str, kimg: float, eval_every: float, device: str, train_args: str, resume: bool) -> list:
    cmd = [sys.executable, TRAIN_PY, f'--outdir={run.folder}', f'--data={data}', f'--aug={run.spec}', f'--cfg={cfg}',
           f'--kimg={kimg:g}', f'--seed={run.seed}', f'--tick={eval_every:g}', '--snap=1', '--metrics=none', f'--device={device}']
    if resume:
        cmd.append('--resume=latest')
    extra = shlex.split(train_args or '')
    if device == 'cpu' and not any(a.startswith('--workers') for a in extra):
        cmd.append('--workers=0')   # loader processes would only compete with training for the same cores
    return cmd + extra


class TrainProcess:
    """A running train.py segment; its output goes to the run's train.log."""

    def __init__(self, run: Run, cmd: list, kimg_from: float, env: dict | None = None):
        os.makedirs(run.folder, exist_ok=True)
        self.run, self.kimg_from, self.start = run, kimg_from, time.time()
        self.log_path = os.path.join(run.folder, 'train.log')
        self.log = open(self.log_path, 'ab')
        self.log.write(('\n$ ' + ' '.join(shlex.quote(c) for c in cmd) + '\n').encode('utf-8'))
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and not self.log.closed:
            self.log.close()
        return rc

    def kimg(self, target: float | None = None) -> float:
        """Trained kimg so far (the tick line rounds to 0.1, so capped at the target)."""
        now = last_tick_kimg(self.log_path)
        now = self.kimg_from if now is None else max(now, self.kimg_from)
        return now if target is None else min(now, target)

    def stop(self) -> None:
        """SIGTERM: train.py writes a final snapshot and exits, so a rerun continues from there."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.poll()

    def log_tail(self, lines: int = 15) -> str:
        with open(self.log_path, 'rb') as f:
            f.seek(max(os.path.getsize(self.log_path) - 8192, 0))
            return '\n'.join(f.read().decode('utf-8', 'replace').splitlines()[-lines:])

#----------------------------------------------------------------------------

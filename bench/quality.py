"""Quality benchmark: which --aug works best on YOUR small dataset? (docs/quality.md)

    python bench/quality.py --data=DATA.zip --aug=noaug --aug=ada --aug=asa --aug=ada+asa \\
        --cfg=tiny --kimg=40 --eval-every=4 --seeds=3 --outdir=OUT [--device=cuda] [--parallel=4]

Trains every --aug spec with every seed (train.py subprocesses, --parallel of them side by side),
scores G_ema of every snapshot (one every --eval-every kimg) with KID and FD against all images
of DATA, and writes OUT/quality.md (table), OUT/quality.png (curves, seeds as bands),
OUT/grids.png (the same latents for every run at its best snapshot) and OUT/quality.json.
Rerunning with the same OUT continues unfinished runs and never rescores a scored snapshot.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

import click

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH), BENCH]

import dnnlib                       # noqa: E402
import quality_report as report     # noqa: E402
import quality_runs as qruns        # noqa: E402
import quality_score as qscore      # noqa: E402

PLAN_KEYS = ('data', 'cfg', 'eval_every', 'detector', 'num_gen', 'train_args')  # must match when OUT is reused

class QualityError(click.ClickException):
    """Bad input or a failed run; the message names the input and the fix."""

#----------------------------------------------------------------------------
# OUT/plan.json: the settings a reused OUT was made with; scores from other settings never mix.

def check_plan(outdir: str, plan: dict) -> None:
    path = os.path.join(outdir, 'plan.json')
    if os.path.isfile(path):
        with open(path, 'rt') as f:
            old = json.load(f)
        for key in PLAN_KEYS:
            if old.get(key) != plan[key]:
                raise QualityError(f'--outdir: {outdir} was made with {key}={old.get(key)!r}, not {plan[key]!r}; '
                                   f'use the same value to continue it, or a new --outdir')
    os.makedirs(outdir, exist_ok=True)
    dnnlib.util.atomic_write_text(path, json.dumps(plan, indent=2) + '\n')


def load_scores(outdir: str) -> dict:
    """{(run name, kimg): {'kid', 'fd'}} from OUT/scores.jsonl (a torn last line is ignored)."""
    scores = {}
    try:
        with open(os.path.join(outdir, 'scores.jsonl'), 'rt') as f:
            for line in f:
                try:
                    s = json.loads(line)
                    scores[(s['run'], float(s['kimg']))] = dict(kid=float(s['kid']), fd=float(s['fd']))
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    return scores

#----------------------------------------------------------------------------
# Scoring: the oldest unscored grid point of any run.

def next_unscored(runs: list, scores: dict, kimg: float, eval_every: float):
    for run in runs:
        for nominal, pkl in qruns.eval_points(qruns.snapshots(run), eval_every, kimg):
            if (run.name, nominal) not in scores:
                return run, nominal, pkl
    return None


def score_one(job, opts: dict, scores: dict) -> None:
    run, kimg, pkl = job
    start = time.time()
    result = qscore.score_snapshot(pkl, opts['data'], opts['detector'], opts['num_gen'], opts['device'], opts['detector_dir'])
    scores[(run.name, kimg)] = result
    line = dict(run=run.name, spec=run.spec, seed=run.seed, kimg=kimg, **result, detector=opts['detector'],
                num_gen=opts['num_gen'], snapshot=os.path.relpath(pkl, opts['outdir']), seconds=round(time.time() - start, 1))
    dnnlib.util.append_line(os.path.join(opts['outdir'], 'scores.jsonl'), json.dumps(line))
    print(f'quality: scored {run.name} at kimg {kimg:g}: KID x1e3 {result["kid"] * 1e3:.1f}, FD {result["fd"]:.1f} '
          f'({time.time() - start:.0f} s)', flush=True)

#----------------------------------------------------------------------------
# Progress: runs done, the active runs' kimg, and an ETA from this invocation's rate.

def format_eta(seconds) -> str:
    if seconds is None:
        return '?'
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


class Progress:
    def __init__(self, runs: list, kimg: float):
        self.runs, self.kimg = runs, kimg
        self.start, self.start_kimg, self.last, self.last_line = time.time(), self.trained([]), 0.0, None

    def trained(self, active: list) -> float:
        """kimg trained over all runs: done ones in full, active ones from their log, others from snapshots."""
        total = 0.0
        for run in self.runs:
            proc = next((p for p in active if p.run == run), None)
            if qruns.is_done(run, self.kimg):
                total += self.kimg
            elif proc is not None:
                total += proc.kimg(self.kimg)
            else:
                total += min((qruns.snapshots(run) or [(0, None)])[-1][0], self.kimg)
        return total

    def line(self, active: list, num_scored: int) -> str:
        done_kimg = self.trained(active)
        total = self.kimg * len(self.runs)
        rate = (done_kimg - self.start_kimg) / max(time.time() - self.start, 1e-9)
        eta = max(total - done_kimg, 0) / rate if rate > 0 else None
        now = ', '.join(f'{p.run.name} ({self.runs.index(p.run) + 1}/{len(self.runs)}) kimg {p.kimg(self.kimg):.1f}/{self.kimg:g}' for p in active)
        return f'quality: {now or "training done"} | all runs {done_kimg:.1f}/{total:g} kimg, {num_scored} snapshots scored | ETA {format_eta(eta)}'

    def maybe_print(self, active: list, num_scored: int, quiet: float = 300.0) -> None:
        """Print when the line changes (at most every 10 s), or every `quiet` seconds anyway."""
        line = self.line(active, num_scored)
        since = time.time() - self.last
        if (line.split(' | ETA')[0] != (self.last_line or '').split(' | ETA')[0] and since >= 10) or since >= quiet:
            self.last, self.last_line = time.time(), line
            print(line, flush=True)

#----------------------------------------------------------------------------
# The scheduler: keep --parallel train.py processes busy, score snapshots as they appear.

def run_all(runs: list, opts: dict, scores: dict) -> list:
    """Trains and scores everything; returns [(run, exit code)] of failed training segments."""
    # Seed-major order: if time runs out, every spec has the same seeds done.
    todo = sorted((r for r in runs if not qruns.is_done(r, opts['kimg'])), key=lambda r: r.seed)
    active, failed = [], []
    progress = Progress(runs, opts['kimg'])
    try:
        while True:
            while todo and len(active) < opts['parallel']:
                run = todo.pop(0)
                snaps = qruns.snapshots(run)
                cmd = qruns.train_command(run, opts['data'], opts['cfg'], opts['kimg'], opts['eval_every'], opts['device'],
                                          opts['train_args'], resume=bool(snaps))
                active.append(qruns.TrainProcess(run, cmd, snaps[-1][0] if snaps else 0, opts['env']))
                print(f'quality: {"continuing" if snaps else "training"} {run.name} (log: {active[-1].log_path})', flush=True)
            for proc in [p for p in active if p.poll() is not None]:
                active.remove(proc)
                _finish(proc, opts['kimg'], failed)
            job = next_unscored(runs, scores, opts['kimg'], opts['eval_every'])
            if job is not None:
                score_one(job, opts, scores)
            elif not active and not todo:
                return failed
            else:
                time.sleep(2)
            progress.maybe_print(active, len(scores))
    except KeyboardInterrupt:
        print('\nquality: interrupted; stopping the training runs (a final snapshot each), rerun to continue', flush=True)
        for proc in active:
            proc.stop()
            _finish(proc, opts['kimg'], [])
        raise


def _finish(proc, kimg: float, failed: list) -> None:
    """Record the segment; done only when a snapshot reached kimg (SIGTERM also exits with 0)."""
    rc = proc.poll()
    snaps = qruns.snapshots(proc.run)
    end = min(snaps[-1][0], kimg) if snaps else proc.kimg_from
    qruns.record_segment(proc.run, time.time() - proc.start, proc.kimg_from, end)
    if rc == 0 and end >= kimg:
        qruns.mark_done(proc.run, kimg)
        print(f'quality: {proc.run.name} finished', flush=True)
    elif rc == 0:
        print(f'quality: {proc.run.name} stopped at kimg {end:g}; a rerun continues it', flush=True)
    else:
        failed.append((proc.run, rc))
        print(f'quality: {proc.run.name} FAILED (exit code {rc}); last lines of {proc.log_path}:\n{proc.log_tail()}', flush=True)

#----------------------------------------------------------------------------
# Report: summaries, table, curves and grids from whatever is scored.

def machine_facts(device: str) -> str:
    if device == 'cuda':
        import torch
        return f'GPU: {torch.cuda.get_device_name(0)}'
    return f'CPU: {os.cpu_count()} cores visible, {platform.machine()} ({platform.processor() or "unknown model"})'


def commit_id() -> str:
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=qruns.REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=qruns.REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return (head + ('+local changes' if dirty else '')) if head else 'unknown'


def grid_rows(runs: list, summaries: dict, opts: dict) -> list:
    """Reals, then every run at its best-KID snapshot, all on the same latents."""
    import numpy as np
    import torch
    import calc_metrics
    from training import image_grid
    from training.dataset import ImageFolderDataset
    count = opts['grid_images']
    reals = ImageFolderDataset(path=opts['data'])
    idx = [i * len(reals) // count for i in range(min(count, len(reals)))]
    rows = [('reals', np.stack([reals[i][0] for i in idx]).transpose(0, 2, 3, 1))]
    z = None
    for run in runs:
        best = summaries[run.name].get('best_kid_kimg')
        pkl = dict(qruns.eval_points(qruns.snapshots(run), opts['eval_every'], opts['kimg'])).get(best)
        if pkl is None:
            continue
        G = calc_metrics.load_network(pkl)['G_ema'].to(opts['device'])
        if z is None:
            z = torch.randn([count, G.z_dim], generator=torch.Generator().manual_seed(0))
        c = torch.zeros([count, G.c_dim])
        imgs = image_grid.generate_grid(G, z.to(opts['device']), c.to(opts['device']), batch_gpu=count)
        imgs = np.rint((imgs + 1) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        rows.append((f'{run.spec} s{run.seed} @{best:g}', imgs))
    return rows


def write_report(runs: list, scores: dict, opts: dict, specs: list) -> None:
    # Only finished, fully scored runs enter the summaries: a half-trained seed would skew "final".
    summaries, by_spec, points_by_spec, unfinished = {}, {s: [] for s in specs}, {s: [] for s in specs}, []
    for run in runs:
        points = sorted((k, v) for (name, k), v in scores.items() if name == run.name and k <= opts['kimg'])
        grid = [k for k, _pkl in qruns.eval_points(qruns.snapshots(run), opts['eval_every'], opts['kimg'])]
        if not qruns.is_done(run, opts['kimg']) or len(points) < len(grid):
            unfinished.append(f'{run.name} ({points[-1][0]:g} kimg scored)' if points else run.name)
            continue
        summaries[run.name] = dict(report.run_summary(points), seed=run.seed, sec_per_kimg=qruns.sec_per_kimg(run))
        by_spec[run.spec].append(summaries[run.name])
        points_by_spec[run.spec].append(points)
    runs = [r for r in runs if r.name in summaries]
    kid_curves = {s: report.curve(points_by_spec[s], 'kid') for s in specs}
    fd_curves = {s: report.curve(points_by_spec[s], 'fd') for s in specs}
    meta = dict(data_name=os.path.basename(opts['data']), detector_title=qscore.DETECTOR_TITLES[opts['detector']],
                num_real=opts['num_real'], num_gen=opts['num_gen'], facts={
                    'data': f'`{opts["data"]}` ({opts["num_real"]} images, {opts["resolution"]}x{opts["resolution"]})',
                    'training': f'train.py --cfg={opts["cfg"]} --kimg={opts["kimg"]:g}, snapshot and score every {opts["eval_every"]:g} kimg'
                                + (f', extra options `{opts["train_args"]}`' if opts['train_args'] else ''),
                    'seeds': ', '.join(str(s) for s in opts['seeds']),
                    's/kimg': f'wall seconds per kimg of each train.py (start-up, snapshots included; {opts["parallel"]} run(s) at a time, '
                              'scoring in between)',
                    'machine': machine_facts(opts['device']),
                    'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                    'commit': commit_id(),
                    'left out (unfinished)': ', '.join(unfinished) or 'none'})
    baseline = opts['baseline'] or ('ada' if 'ada' in specs else None)
    md = report.render_markdown(meta, by_spec, {s: [r.seed for r in runs if r.spec == s] for s in specs}, kid_curves, baseline)
    title = f'{meta["data_name"]}, {opts["detector"]}'
    files = {'quality.md': md.encode('utf-8'), 'quality.png': report.curves_png(kid_curves, fd_curves, title),
             'quality.json': (json.dumps(dict(meta=meta, runs=summaries, kid_curves=kid_curves, fd_curves=fd_curves), indent=2) + '\n').encode('utf-8')}
    if any('best_kid_kimg' in s for s in summaries.values()):
        files['grids.png'] = report.grid_png(grid_rows(runs, summaries, opts))
    for name, data in files.items():
        dnnlib.util.atomic_write_bytes(os.path.join(opts['outdir'], name), data)
    print(f'quality: wrote {", ".join(os.path.join(opts["outdir"], n) for n in files)}', flush=True)

#----------------------------------------------------------------------------

def train_env(device: str, parallel: int) -> dict:
    """On the CPU, the cores split between the side-by-side runs: OpenMP threads that outnumber
    the free cores spin at every barrier (measured: many times slower per kimg on a loaded machine)."""
    env = dict(os.environ)
    if device == 'cpu' and 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def check_data(data: str) -> tuple:
    from training.dataset import DatasetError, ImageFolderDataset
    try:
        ds = ImageFolderDataset(path=data)
        n, res = len(ds), ds.resolution
        ds.close()
    except DatasetError as e:
        raise QualityError(f'--data: {e}') from None
    if n < 2:
        raise QualityError(f'--data: {data} holds {n} image(s); KID and FD need at least 2')
    return n, res


@click.command()
@click.option('--data', help='Dataset (zip or folder from dataset_tool.py): trained on, and scored against all of it', required=True, metavar='PATH')
@click.option('--aug', 'specs', help='--aug spec to compare (repeat the option)', multiple=True, required=True, metavar='SPEC')
@click.option('--cfg', help='train.py --cfg for every run', default='tiny', show_default=True)
@click.option('--kimg', help='Training length of every run', type=click.FloatRange(min=0, min_open=True), required=True)
@click.option('--eval-every', help='Snapshot and score every N kimg [default: kimg/10]', type=click.FloatRange(min=0, min_open=True))
@click.option('--seeds', help='Training seeds per spec (0..N-1)', type=click.IntRange(min=1), default=2, show_default=True)
@click.option('--outdir', help='Benchmark folder; rerun with the same one to continue', required=True, metavar='DIR')
@click.option('--device', help='Where to train and score [default: cuda if available]', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto')
@click.option('--parallel', help='Training runs side by side (one GPU holds several small runs)', type=click.IntRange(min=1), default=1, show_default=True)
@click.option('--num-gen', help='Generated images per score', type=click.IntRange(min=2), default=500, show_default=True)
@click.option('--detector', help='Feature network; auto = Inception if its file is on disk, else the offline one', type=click.Choice(['auto', 'inception', 'effnet-lite0']), default='auto', show_default=True)
@click.option('--detector-dir', help='Folder with local detector files', metavar='DIR')
@click.option('--train-args', help='Extra train.py options for every run, e.g. "--workers=0 --batch=32"', default='', metavar='STR')
@click.option('--baseline', help='Spec the others are compared with [default: ada if given]', metavar='SPEC')
@click.option('--grid-images', help='Images per run in grids.png', type=click.IntRange(min=1), default=8, show_default=True)
@click.option('--report-only', help='Only rewrite the report from what OUT holds', is_flag=True)
def main(data, specs, cfg, kimg, eval_every, seeds, outdir, device, parallel, num_gen, detector, detector_dir, train_args, baseline, grid_images, report_only):
    """Train and score every --aug spec x seed on DATA; table, curves and grids in OUTDIR."""
    import torch
    specs = list(dict.fromkeys(s.strip() for s in specs if s.strip()))
    if not specs:
        raise QualityError('--aug: give at least one spec, e.g. --aug=noaug --aug=ada')
    if baseline is not None and baseline not in specs:
        raise QualityError(f'--baseline: {baseline} is not one of the --aug specs ({", ".join(specs)})')
    data = os.path.abspath(os.path.expanduser(data))
    num_real, resolution = check_data(data)
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise QualityError('--device=cuda: no CUDA GPU is visible to PyTorch; use --device=cpu')
    detector = qscore.choose_detector(detector, detector_dir)
    try:
        qscore.prepare(detector, detector_dir)
    except (ImportError, RuntimeError) as e:
        raise QualityError(f'--detector={detector}: {str(e).splitlines()[0]}') from None
    eval_every = eval_every or kimg / 10
    outdir = os.path.abspath(os.path.expanduser(outdir))
    opts = dict(data=data, cfg=cfg, kimg=kimg, eval_every=eval_every, seeds=list(range(seeds)), outdir=outdir, device=device,
                parallel=parallel, num_gen=num_gen, detector=detector, detector_dir=detector_dir, train_args=train_args,
                baseline=baseline, grid_images=grid_images, num_real=num_real, resolution=resolution)
    opts['env'] = train_env(device, parallel)
    check_plan(outdir, {k: opts[k] for k in PLAN_KEYS})
    runs = qruns.plan_runs(specs, opts['seeds'], outdir)
    scores = load_scores(outdir)
    failed = []
    if not report_only:
        print(f'quality: {len(runs)} runs ({len(specs)} specs x {seeds} seeds) of {kimg:g} kimg on {device}, '
              f'{parallel} at a time; detector {detector}; {len(scores)} snapshots already scored', flush=True)
        previous = signal.signal(signal.SIGTERM, _interrupt)     # `kill` stops the runs cleanly too
        try:
            failed = run_all(runs, opts, scores)
        except KeyboardInterrupt:
            write_report(runs, scores, opts, specs)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)
    write_report(runs, scores, opts, specs)
    if failed:
        names = ', '.join(f'{run.name} (exit {rc})' for run, rc in failed)
        raise QualityError(f'training failed for {names}; see train.log in OUT/runs/<run>/, fix it and rerun to continue')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

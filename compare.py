"""Put several training runs side by side on one metric: does ASA beat my ADA baseline?

    # existing runs
    python compare.py --runs=training-runs/00000-x-ada,training-runs/00001-x-asa --metric=fid50k_full --outdir=cmp
    # train each --aug spec with the same seed, data and kimg budget, then compare
    python compare.py --specs='ada;ada+asa;diffaug:color,translation,cutout' --data=datasets/emoji32.zip \\
        --kimg=1 --cfg=tiny --metric=fid1k_full --outdir=cmp --train-args='--device=cpu --tick=1 --snap=1'

Every snapshot of every run is evaluated (lines already in the run's metric-{name}.jsonl are
reused; new evaluations are appended there, like train.py does). The output folder gets
comparison.md (table + best snapshot per run), comparison.png (metric vs kimg, one line per
run) and comparison.json, written together and atomically: on any error nothing is written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import click

import dnnlib
from dnnlib.progress import Progress

# torch and metrics.metric_main load in the functions that use them: `--help` stays instant.

# Upstream's names and the exact-kimg names that later snapshots within one kimg get (NNNNNN.FFF).
SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)(?:\.\d{3})?\.pkl$')

class CompareError(click.ClickException):
    """Bad input to the comparison; the message names the input and the fix."""

#----------------------------------------------------------------------------
# Run folders: snapshots by kimg, recorded metric lines, a label for the legend.

def find_snapshots(run_dir: str) -> list:
    """[(kimg, path)] sorted by kimg; a run without snapshots is an error. The kimg is the true one,
    read from the snapshot's training state (e.g. 0.5 for a 0.5-kimg run's final snapshot), not the
    rounded-down number in upstream's file name."""
    from training import checkpoint
    if not os.path.isdir(run_dir):
        raise CompareError(f'--runs: {run_dir} is not a folder')
    snaps = []
    for name in os.listdir(run_dir):    # not glob: run folder names may hold [ ] * ?
        if SNAPSHOT_RE.match(name):
            path = os.path.join(run_dir, name)
            snaps.append((checkpoint.snapshot_kimg(path), path))
    if not snaps:
        raise CompareError(f'--runs: {run_dir} holds no network-snapshot-*.pkl; train longer or pass the run folder itself')
    return sorted(snaps)


def read_metric_lines(run_dir: str, metric: str) -> dict:
    """{snapshot file name: results} from run_dir/metric-{metric}.jsonl; later lines win."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    found = {}
    if not os.path.isfile(path):
        return found
    with open(path, 'rt') as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue    # a torn last line from a killed writer; that snapshot is re-evaluated
            if entry.get('metric') == metric and entry.get('snapshot_pkl') and isinstance(entry.get('results'), dict):
                found[os.path.basename(entry['snapshot_pkl'])] = entry['results']
    return found


def run_label(run_dir: str) -> str:
    """The run's --aug spec from training_options.json, else its folder name."""
    try:
        with open(os.path.join(run_dir, 'training_options.json'), 'rt') as f:
            options = json.load(f)
    except (OSError, json.JSONDecodeError):
        return os.path.basename(os.path.normpath(run_dir))
    if options.get('aug_spec'):
        return str(options['aug_spec'])
    if 'augment_kwargs' not in options:
        return 'noaug'
    return 'ada' if options.get('ada_target') is not None else f'fixed p={options.get("augment_p")}'

#----------------------------------------------------------------------------
# Which result to plot and rank by, and in which direction.

def primary_key(metric: str) -> str:
    from metrics import metric_main
    base = metric[:-len(metric_main.EFFNET_SUFFIX)] if metric.endswith(metric_main.EFFNET_SUFFIX) else metric
    if base.startswith('pr'):
        return f'{metric}_precision'
    if base.startswith('is'):
        return f'{metric}_mean'
    return metric


def lower_is_better(key: str) -> bool:
    return not (key.endswith('_precision') or key.endswith('_recall') or key.endswith('_mean'))


def best_point(points: list, key: str):
    """(kimg, value) of the best snapshot among [(kimg, results, ...)], ties -> earliest."""
    valid = [(kimg, res[key]) for kimg, res, *_ in points if isinstance(res.get(key), (int, float)) and res[key] == res[key]]
    if not valid:
        return None
    sign = 1 if lower_is_better(key) else -1
    return min(valid, key=lambda kv: (sign * kv[1], kv[0]))

#----------------------------------------------------------------------------
# Evaluation of one snapshot through the metric registry; the line is recorded in the run.

def evaluate_snapshot(pkl: str, metric: str, data=None, device='cpu', detector_dir=None, seed=0, verbose=False) -> dict:
    import torch
    import calc_metrics
    from metrics import metric_main
    network = calc_metrics.load_network(pkl)
    G = network['G_ema']
    dataset_kwargs = calc_metrics.dataset_kwargs_for(G, data, None, network.get('training_set_kwargs'))
    result = metric_main.calc_metric(metric, G=G, dataset_kwargs=dataset_kwargs, num_gpus=1, rank=0,
                                     device=torch.device(device), detector_dir=detector_dir, seed=seed, verbose=verbose)
    metric_main.report_metric(result, run_dir=os.path.dirname(os.path.abspath(pkl)), snapshot_pkl=pkl)
    return dict(result['results'])


def evaluate_run(run_dir: str, metric: str, evaluate=evaluate_snapshot, reuse=True, **eval_kwargs) -> list:
    """[(kimg, results, snapshot path)] for every snapshot of the run."""
    recorded = read_metric_lines(run_dir, metric) if reuse else {}
    points = []
    for kimg, pkl in find_snapshots(run_dir):
        results = recorded.get(os.path.basename(pkl))
        if results is None:
            results = evaluate(pkl, metric, **eval_kwargs)
        points.append((kimg, results, pkl))
    return points

#----------------------------------------------------------------------------
# Outputs: markdown table, plot, json.

def render_markdown(metric: str, key: str, runs: list) -> str:
    """runs: [dict(label, run_dir, points)]."""
    from metrics import metric_main
    better = 'lower' if lower_is_better(key) else 'higher'
    lines = [f'# Comparison: {metric}', '']
    if not metric_main.is_comparable(metric):
        lines += [f'**{metric_main.NOT_COMPARABLE}.** Use these numbers only to rank these runs against each other.', '']
    lines += [f'Ranked by `{key}` ({better} is better).', '',
              '| run | folder | snapshots | best kimg | best value | last kimg | last value |',
              '|---|---|---:|---:|---:|---:|---:|']
    for run in runs:
        best = best_point(run['points'], key)
        last_kimg, last_res = run['points'][-1][:2]
        lines.append(f'| {run["label"]} | {os.path.basename(os.path.normpath(run["run_dir"]))} | {len(run["points"])} | '
                     f'{_kimg(best[0]) if best else "-"} | {_fmt(best[1]) if best else "-"} | {_kimg(last_kimg)} | {_fmt(last_res.get(key))} |')
    lines += ['', '## Best snapshot per run', '']
    for run in runs:
        best = best_point(run['points'], key)
        if best:
            path = next(p[2] for p in run['points'] if p[0] == best[0])
            lines.append(f'- {run["label"]}: `{path}` ({key} = {_fmt(best[1])})')
    kimgs = sorted({point[0] for run in runs for point in run['points']})
    lines += ['', f'## {key} by kimg', '', '| kimg | ' + ' | '.join(run['label'] for run in runs) + ' |',
              '|---:|' + '---:|' * len(runs)]
    for kimg in kimgs:
        by_kimg = [{p[0]: p[1] for p in run['points']} for run in runs]
        cells = [_fmt(pts[kimg].get(key)) if kimg in pts else '' for pts in by_kimg]
        lines.append(f'| {_kimg(kimg)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _kimg(kimg) -> str:
    return f'{kimg:g}' if isinstance(kimg, (int, float)) else '-'


def _fmt(value) -> str:
    return f'{value:.4g}' if isinstance(value, (int, float)) else '-'


def write_outputs(outdir: str, files: dict) -> None:
    """Write {name: bytes} into a fresh outdir all at once (temp folder + rename)."""
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        raise CompareError(f'--outdir: {outdir} already exists and is not empty; choose a new folder')
    with dnnlib.util.AtomicFolder(outdir) as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), 'wb') as f:
                f.write(data)

#----------------------------------------------------------------------------
# --specs: train every spec with the same seed, data and budget, one subprocess each.

def train_command(spec: str, data, kimg: float, seed: int, cfg: str, train_outdir: str, train_args: str, train_py=None) -> list:
    """The train.py command line of one spec (also used by demo.py)."""
    train_py = train_py or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')
    if not os.path.isfile(train_py):
        raise CompareError('--specs: train.py is missing next to compare.py')
    return [sys.executable, train_py, f'--outdir={train_outdir}', f'--aug={spec}', f'--seed={seed}',
            f'--kimg={kimg:g}', f'--cfg={cfg}', '--metrics=none'] + ([f'--data={data}'] if data else []) + shlex.split(train_args or '')


def train_specs(specs: list, data, kimg: float, seed: int, cfg: str, train_outdir: str, train_args: str, train_py=None) -> list:
    os.makedirs(train_outdir, exist_ok=True)
    run_dirs = []
    for spec in specs:
        before = set(os.listdir(train_outdir))
        cmd = train_command(spec, data, kimg, seed, cfg, train_outdir, train_args, train_py)
        print('Training: ' + ' '.join(shlex.quote(c) for c in cmd), flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise CompareError(f'--specs: training "{spec}" failed (exit code {proc.returncode}); see its output above')
        new = sorted(set(os.listdir(train_outdir)) - before)
        if len(new) != 1:
            raise CompareError(f'--specs: could not tell which folder in {train_outdir} the run "{spec}" wrote')
        run_dirs.append(os.path.join(train_outdir, new[0]))
    return run_dirs

#----------------------------------------------------------------------------

def compare_runs(run_dirs: list, metric: str, outdir: str, labels=None, key=None, evaluate=evaluate_snapshot, reuse=True, **eval_kwargs) -> dict:
    """Evaluate every snapshot of every run, then write the table, plot and json to outdir."""
    from metrics import metric_main, plot
    if not metric_main.is_valid_metric(metric):
        metric_main.get_metric_fn(metric)   # raises with the list of valid names
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        raise CompareError(f'--outdir: {outdir} already exists and is not empty; choose a new folder')
    missing = 0
    for run_dir in run_dirs:        # every input is checked before any evaluation
        recorded = read_metric_lines(run_dir, metric) if reuse else {}
        missing += sum(os.path.basename(pkl) not in recorded for _kimg, pkl in find_snapshots(run_dir))
    if missing and evaluate is evaluate_snapshot:
        metric_main.prepare_detectors([metric], detector_dir=eval_kwargs.get('detector_dir'), verbose=False)
    key = key or primary_key(metric)
    labels = labels or [run_label(d) for d in run_dirs]
    scored = Progress(f'{metric}: snapshots scored', missing, interval=0)
    if missing:
        print(f'Scoring {missing} snapshots with {metric}; reused {sum(len(find_snapshots(d)) for d in run_dirs) - missing}', flush=True)

    def evaluate_with_progress(pkl, metric, **kwargs):  # one line per snapshot, with the ETA of all
        print(f'Scoring {pkl} ...', flush=True)
        results = evaluate(pkl, metric, **kwargs)
        scored.step()
        return results

    runs = [dict(label=label, run_dir=run_dir, points=evaluate_run(run_dir, metric, evaluate_with_progress, reuse, **eval_kwargs))
            for label, run_dir in zip(labels, run_dirs)]
    summary = dict(metric=metric, key=key, comparable=metric_main.is_comparable(metric),
                   runs=[dict(label=r['label'], run_dir=r['run_dir'], best=best_point(r['points'], key),
                              points=[dict(kimg=k, results=res, snapshot_pkl=pkl) for k, res, pkl in r['points']]) for r in runs])
    title = f'{key} vs kimg' + ('' if summary['comparable'] else ' (effnet: NOT comparable to Inception FID)')
    png = plot.line_plot_png([(r['label'], [(k, res.get(key)) for k, res, _ in r['points']]) for r in runs],
                             xlabel='kimg', ylabel=key, title=title)
    write_outputs(outdir, {'comparison.md': render_markdown(metric, key, runs).encode('utf-8'), 'comparison.png': png,
                           'comparison.json': (json.dumps(summary, indent=2) + '\n').encode('utf-8')})
    return summary

#----------------------------------------------------------------------------

def _split_specs(values: tuple) -> list:
    return [s.strip() for v in values for s in v.split(';') if s.strip()]


@click.command()
@click.option('--runs', help='Comma-separated run folders to compare', metavar='DIRS')
@click.option('--specs', help='--aug specs to train and compare, separated by ";" (repeatable)', multiple=True, metavar='SPECS')
@click.option('--metric', help='Metric to evaluate on every snapshot', default='fid50k_full', show_default=True)
@click.option('--outdir', help='Folder for comparison.md/.png/.json (must not exist or be empty)', required=True, metavar='DIR')
@click.option('--data', help='Real images for the metric, and training data for --specs [default: each run\'s training set; train.py\'s default]', metavar='PATH')
@click.option('--kimg', help='Training length per spec in kimg, fractions allowed (--specs)', type=click.FloatRange(min=0, min_open=True), default=1, show_default=True)
@click.option('--seed', help='Training seed per spec, and metric latent seed', type=int, default=0, show_default=True)
@click.option('--cfg', help='train.py --cfg per spec (--specs)', default='tiny', show_default=True)
@click.option('--train-outdir', help='Where --specs runs are trained', default='training-runs', show_default=True, metavar='DIR')
@click.option('--train-args', help='Extra train.py options for --specs, e.g. "--device=cpu --snap=1"', default='', metavar='STR')
@click.option('--device', help='Device for the metric', type=click.Choice(['cpu', 'cuda']), default=None)
@click.option('--detector', help='Feature network (effnet-lite0: offline, NOT comparable)', type=click.Choice(['inception', 'effnet-lite0']), default='inception', show_default=True)
@click.option('--detector-dir', help='Folder with local detector files', metavar='DIR')
@click.option('--reuse/--no-reuse', help='Reuse lines already in the runs\' metric-*.jsonl', default=True, show_default=True)
def main(runs, specs, metric, outdir, data, kimg, seed, cfg, train_outdir, train_args, device, detector, detector_dir, reuse):
    """Compare training runs (or --aug specs) on one metric over their snapshots."""
    import torch
    import calc_metrics
    from metrics import metric_main
    specs = _split_specs(specs)
    if bool(runs) == bool(specs):
        raise CompareError('give either --runs=DIR1,DIR2 or --specs="spec1;spec2", not both and not neither')
    metric = calc_metrics.metric_names([metric], detector)[0]
    if not metric_main.is_valid_metric(metric):
        raise CompareError(f'--metric: unknown "{metric}"; valid: ' + ', '.join(metric_main.list_valid_metrics()))
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        raise CompareError(f'--outdir: {outdir} already exists and is not empty; choose a new folder')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if data is not None and reuse and runs:
        print('Note: lines already in metric-*.jsonl were computed against each run\'s own real set, not --data; '
              'use --no-reuse if those differ')
    if specs:
        run_dirs, labels = train_specs(specs, data, kimg, seed, cfg, train_outdir, train_args), specs
    else:
        run_dirs, labels = [d for d in runs.split(',') if d], None
    try:
        summary = compare_runs(run_dirs, metric, outdir, labels=labels, reuse=reuse, data=data, device=device,
                               detector_dir=detector_dir, seed=seed, verbose=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise CompareError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    for run in summary['runs']:
        best = run['best']
        print(f'{run["label"]}: best {summary["key"]} = {best[1]:.4g} at kimg {best[0]:g}' if best else f'{run["label"]}: no value')
    print(f'Wrote {os.path.join(outdir, "comparison.md")} and comparison.png')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

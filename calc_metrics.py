"""Calculate quality metrics for a network pickle (upstream's calc_metrics.py CLI, docs/compatibility.md §8).

    python calc_metrics.py --network=training-runs/00000-x/network-snapshot-000100.pkl --metrics=fid50k_full,kid50k_full
    python calc_metrics.py --network=net.pkl --data=~/datasets/ffhq.zip --mirror=1 --metrics=pr50k3_full
    python calc_metrics.py --network=net.pkl --device=cpu --detector=effnet-lite0 --metrics=fid1k_full   # offline, NOT comparable

When the pickle sits in a run folder (next to training_options.json) the results are also
appended to that folder's metric-{name}.jsonl; otherwise they are only printed.
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile

import click

import dnnlib
from metrics import detectors

# torch and the metric modules load in the functions that use them: `--help` stays instant.

#----------------------------------------------------------------------------
# Snapshot loading shared with compare.py: G_ema and the training-set kwargs of a pickle.

def load_network(network_pkl: str, verbose: bool = False) -> dict:
    import legacy
    with dnnlib.util.open_url(network_pkl, verbose=verbose) as f:
        return legacy.load_network_pkl(f)


def run_dir_of(network_pkl: str):
    """The run folder holding `network_pkl`, or None when it is not a local pickle inside one."""
    if not os.path.isfile(network_pkl):
        return None
    folder = os.path.dirname(os.path.abspath(network_pkl))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def metric_names(metrics: list, detector: str) -> list:
    """With the offline detector every metric becomes its not-comparable `_effnet` twin."""
    from metrics import metric_main
    if detector != detectors.EFFNET:
        return list(metrics)
    return [m if m.endswith(metric_main.EFFNET_SUFFIX) else m + metric_main.EFFNET_SUFFIX for m in metrics]


DATASET_CLASS = 'training.dataset.ImageFolderDataset'

# The only values taken from a pickle's training_set_kwargs, with the types they must have. The
# pickle is untrusted: its class_name (any dotted name would be imported and called) is never used,
# the dataset is always this project's own class (docs/crash-safety.md, "Pickle safety").
# Exact types: no subclasses, and no bool where an int is meant.
_STORED_DATASET_TYPES = dict(path=(str,), max_size=(int, type(None)), xflip=(bool,), random_seed=(int,))


def stored_dataset_kwargs(stored: dict) -> dnnlib.EasyDict:
    """Plain, type-checked copy of the dataset kwargs recorded in a pickle; refuses anything else."""
    fix = 'pass --data=PATH'
    class_name = stored.get('class_name', DATASET_CLASS)
    if class_name != DATASET_CLASS:
        raise click.ClickException(f'--data: the pickle names its training set with class {str(class_name)[:80]!r}, '
                                   f'which is never loaded from a pickle; {fix}')
    kwargs = dnnlib.EasyDict(class_name=DATASET_CLASS)
    for key, types in _STORED_DATASET_TYPES.items():
        if key not in stored:
            continue
        value = stored[key]
        if type(value) not in types:
            raise click.ClickException(f'--data: the pickle\'s training set {key} is a {type(value).__name__}, not valid; {fix}')
        kwargs[key] = value
    if not kwargs.get('path'):
        raise click.ClickException(f'--data: the pickle does not name its training set; {fix}')
    if kwargs.get('max_size') is not None and kwargs.max_size < 1:
        raise click.ClickException(f'--data: the pickle\'s training set max_size is {kwargs.max_size}; {fix}')
    return kwargs


def dataset_kwargs_for(G, data, mirror, training_set_kwargs) -> dict:
    """Upstream's rule: --data, else the pickle's training set; resolution and labels from G."""
    if data is not None:
        kwargs = dnnlib.EasyDict(class_name=DATASET_CLASS, path=data)
    elif isinstance(training_set_kwargs, dict):
        kwargs = stored_dataset_kwargs(training_set_kwargs)
    else:
        raise click.ClickException('--data: the pickle does not name its training set; pass --data=PATH')
    kwargs.resolution = int(G.img_resolution)
    kwargs.use_labels = (G.c_dim != 0)
    if mirror is not None:
        kwargs.xflip = mirror
    return kwargs

#----------------------------------------------------------------------------
# One process per device; rank 0 prints and writes.

def subprocess_fn(rank: int, args: dnnlib.EasyDict, temp_dir: str) -> None:
    import torch
    from metrics import metric_main
    if args.num_gpus > 1:
        from training.distributed import init_distributed
        init_method = f'file://{os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))}'
        init_distributed(rank, args.num_gpus, init_method, device=args.device_type)
    device = torch.device(args.device_type, rank) if args.device_type == 'cuda' else torch.device('cpu')
    if device.type == 'cpu' and args.num_gpus > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.num_gpus))   # CPU ranks share the cores
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False   # metrics in full fp32, like upstream
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    G = copy.deepcopy(args.G).to(device)
    G.eval().requires_grad_(False)
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            print(f'Metric {metric}: computing...')
        result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs,
                                         num_gpus=args.num_gpus, rank=rank, device=device, verbose=args.verbose,
                                         detector_dir=args.detector_dir)
        if rank == 0:
            metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
            if not metric_main.is_comparable(metric):
                print(f'NOTE: {metric}: {metric_main.NOT_COMPARABLE}')

#----------------------------------------------------------------------------

def parse_comma_list(s: str) -> list:
    return [] if s in ('', 'none') else s.split(',')


@click.command()
@click.pass_context
@click.option('--network', 'network_pkl', help='Snapshot .pkl to evaluate (local path or http(s) URL)', metavar='PATH', required=True)
@click.option('--metrics', help='Metric names separated by commas, or "none"', type=parse_comma_list, default='fid50k_full', show_default=True, metavar='LIST')
@click.option('--data', help='Reference images: folder or zip [default: the training set recorded in the pickle]', metavar='PATH')
@click.option('--mirror', help='Was training run with --mirror (x-flipped copies)? [default: from the pickle]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Worker processes: one per GPU, or CPU processes with --device=cpu', type=click.IntRange(min=1), default=1, show_default=True, metavar='INT')
@click.option('--verbose', help='Report progress and settings', type=bool, default=True, metavar='BOOL', show_default=True)
@click.option('--device', help='cuda or cpu [default: cuda if available]', type=click.Choice(['cuda', 'cpu']))
@click.option('--detector', help=f'Feature network: upstream inception/vgg16, or {detectors.EFFNET} offline (NOT comparable)',
              type=click.Choice(['inception', detectors.EFFNET]), default='inception', show_default=True)
@click.option('--detector-dir', help=f'Folder with local detector files [default: ${detectors.ENV_DIR}, cache, download]', metavar='DIR')
def calc_metrics(ctx, network_pkl, metrics, data, mirror, gpus, verbose, device, detector, detector_dir):
    """Evaluate metrics (FID, KID, PR, IS, PPL) of a network pickle, e.g. a snapshot of a run.

    Recommended: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend. Legacy: fid50k, kid50k,
    pr50k3, is50k, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend. Quick sized variants:
    fid1k_full, kid2k_full, pr1k3_full, is5k, fid200_full. Any name + _effnet (or
    --detector=effnet-lite0): offline EfficientNet-Lite0 features, NOT comparable.
    """
    import torch
    from metrics import metric_main, metric_utils
    metrics = metric_names(metrics, detector)
    bad = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if bad:
        ctx.fail(f'--metrics: unknown {", ".join(bad)}; valid: ' + ', '.join(metric_main.list_valid_metrics()))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        ctx.fail('--device=cuda: no CUDA device is available; use --device=cpu')
    if device == 'cuda' and gpus > torch.cuda.device_count():
        ctx.fail(f'--gpus={gpus}: only {torch.cuda.device_count()} CUDA devices are visible')
    if detector_dir is not None and not os.path.isdir(detector_dir):
        ctx.fail(f'--detector-dir: {detector_dir} is not a folder')

    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, network_pkl=network_pkl, verbose=verbose,
                           device_type=device, detector_dir=detector_dir)
    if verbose:
        print(f'Reading {network_pkl}')
    try:
        network_dict = load_network(network_pkl, verbose=verbose)
    except (OSError, pickle.UnpicklingError) as err:
        ctx.fail(f'--network: {str(err).splitlines()[0] if str(err) else type(err).__name__}')
    args.G = network_dict['G_ema']
    args.dataset_kwargs = dataset_kwargs_for(args.G, data, mirror, network_dict.get('training_set_kwargs'))
    try:
        dnnlib.util.construct_class_by_name(**args.dataset_kwargs)  # fail early, in the parent, with the dataset's message
    except IOError as err:
        ctx.fail(f'--data: {err}')
    try:
        metric_main.prepare_detectors(metrics, detector_dir=detector_dir, verbose=verbose)
    except (detectors.DetectorError, ImportError) as err:
        raise click.ClickException(str(err)) from None
    args.run_dir = run_dir_of(network_pkl)
    if verbose and args.run_dir:
        from training import checkpoint
        kimg = checkpoint.snapshot_kimg(network_pkl)  # The true kimg; upstream's file name rounds it down.
        print(f'Snapshot of {args.run_dir} at kimg {kimg:g}' if kimg is not None else f'Snapshot of {args.run_dir}')
    if verbose:
        print(f'Dataset options: {dict(args.dataset_kwargs)}')
        print(f'Results go to {"stdout and " + args.run_dir if args.run_dir else "stdout only"}')

    with tempfile.TemporaryDirectory() as temp_dir:
        try:
            if args.num_gpus == 1:
                subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
            else:
                # CPU ranks fork (no CUDA state to protect, and no re-import of everything per rank).
                method = 'fork' if args.device_type == 'cpu' and os.name == 'posix' else 'spawn'
                torch.multiprocessing.start_processes(subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus, start_method=method)
        except (metric_utils.MetricInputError, detectors.DetectorError, ImportError) as err:
            raise click.ClickException(str(err)) from None

#----------------------------------------------------------------------------

if __name__ == '__main__':
    calc_metrics()  # arguments come from click

#----------------------------------------------------------------------------

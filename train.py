"""Train a StyleGAN2 (ADA-compatible) with the asa_plugin augmentations.

Parses and validates the command line (training/config.py builds the options), writes
training_options.json into a new run folder, starts one process per GPU (or joins a torchrun
job), and calls training.training_loop.training_loop(rank, **options) in each.
"""

from __future__ import annotations

import json
import os
import tempfile

import click

import dnnlib
from training import config

#----------------------------------------------------------------------------
# Comma-separated list; 'none' or empty gives [].

class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list): # already converted (default or programmatic call)
            return value
        text = '' if value is None else value.strip()
        if text.lower() in ('', 'none'):
            return []
        return [item.strip() for item in text.split(',') if item.strip()]

#----------------------------------------------------------------------------
# Set up this process (log file, process group) and run the training loop.

def subprocess_fn(rank: int, options: dict, temp_dir: str, init_method: str | None = None) -> None:
    import dnnlib
    logger = dnnlib.util.Logger(file_name=os.path.join(options['run_dir'], 'log.txt'), file_mode='a', should_flush=True)
    try:
        if options['num_gpus'] > 1 and init_method is None:
            from training import distributed
            init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
            url = 'file:///' + init_file.replace('\\', '/').lstrip('/') if os.name == 'nt' else f'file://{init_file}'
            distributed.init_distributed(rank, options['num_gpus'], url, device=options['device'])
        if rank != 0:
            from torch_utils import custom_ops
            custom_ops.verbosity = 'none'
        from training import training_loop
        training_loop.training_loop(rank=rank, **options)
    finally:
        logger.close()

#----------------------------------------------------------------------------
# Start the processes: in-process for one, spawn for several, or this torchrun rank.

def launch(options: dict, torchrun_rank: int | None) -> None:
    if torchrun_rank is not None:
        subprocess_fn(torchrun_rank, options, temp_dir='', init_method='env://')
        return
    import torch
    with tempfile.TemporaryDirectory() as temp_dir:
        if options['num_gpus'] == 1:
            subprocess_fn(0, options, temp_dir)
        else:
            torch.multiprocessing.set_start_method('spawn', force=True)
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(options, temp_dir), nprocs=options['num_gpus'])

#----------------------------------------------------------------------------
# torchrun: join the env:// group before the run folder exists, so rank 0 can pick it and tell
# the others. Returns (rank, world_size) or (None, None) when not launched by torchrun.

def torchrun_env() -> tuple:
    if not all(k in os.environ for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')):
        return None, None
    return int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])


def torchrun_init(device: str) -> None:
    import datetime
    import torch
    if device == 'cuda':
        from training import distributed
        torch.cuda.set_device(distributed.local_device_index(int(os.environ['RANK'])))
    torch.distributed.init_process_group(backend='nccl' if device == 'cuda' else 'gloo', init_method='env://',
                                         timeout=datetime.timedelta(seconds=600))


def torchrun_share(value):
    import torch
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]

#----------------------------------------------------------------------------
# Find or download the detectors the metrics need at startup, so that an offline machine stops
# here with the fix rather than at the first snapshot. Every process checks, before any collective.

def prepare_metric_detectors(metrics: list, verbose: bool) -> None:
    if not metrics:
        return
    from metrics import detectors, metric_main
    try:
        metric_main.prepare_detectors(metrics, verbose=verbose)
    except (detectors.DetectorError, ImportError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.ClickException(f'--metrics={",".join(metrics)}: {reason} (train.py reads local detectors from '
                                   f'${detectors.ENV_DIR}); or train with --metrics=none') from None

#----------------------------------------------------------------------------
# Fail before anything is created when the output folder cannot be written.

def check_outdir(outdir: str) -> None:
    problem = dnnlib.util.output_folder_problem(outdir)
    if problem:
        raise click.BadParameter(f'{outdir}: {problem}; pick another --outdir', param_hint='--outdir')


def write_options(run_dir: str, options: dict) -> None:
    dnnlib.util.atomic_write_text(os.path.join(run_dir, 'training_options.json'), json.dumps(options, indent=2))

#----------------------------------------------------------------------------

@click.command()
@click.pass_context
# Run, logging and hardware.
@click.option('--outdir', help='Parent folder of the run folders', required=True, metavar='DIR')
@click.option('--gpus', help='Processes to start, one per GPU [default: 1]', type=click.IntRange(min=1), metavar='INT')
@click.option('--snap', help='Write images and a network pickle every N ticks [default: 50; 10 for --cfg=lowshot]', type=int, metavar='INT')
@click.option('--metrics', help='Metrics to evaluate at each snapshot, comma-separated, or "none" [default: fid50k_full; none for --cfg=tiny]', type=CommaSeparatedList())
@click.option('--seed', help='Seed for every random generator [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Show the options and the run folder, create nothing', is_flag=True)
# Dataset.
@click.option('--data', help='Image folder or zip made by dataset_tool.py [default: datasets/emoji32.zip]', metavar='PATH')
@click.option('--cond', help='Condition G and D on the labels in dataset.json [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Use a fixed random subset of N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Add horizontally mirrored copies of the images [default: false]', type=bool, metavar='BOOL')
# Preset and its overrides.
@click.option('--cfg', help='Preset for network size, batch and hyperparameters [default: auto]', type=click.Choice(list(config.PRESETS)))
@click.option('--gamma', help='R1 regularization weight instead of the preset\'s', type=float)
@click.option('--kimg', help='Length of training in thousands of images (fractions allowed)', type=float, metavar='KIMG')
@click.option('--batch', help='Total batch size over all GPUs instead of the preset\'s', type=int, metavar='INT')
@click.option('--batch-gpu', help='Images per GPU per round (gradient accumulation), or auto: from free GPU memory [default: preset]', type=config.BATCH_GPU, metavar='INT|auto')
@click.option('--tick', help='Progress print interval in kimg [default: 4]', type=float, metavar='KIMG')
# Augmentation of what D sees.
@click.option('--aug', help='noaug | ada | fixed, or a spec like ada:bgc+asa [default: ada]', metavar='SPEC')
@click.option('--p', help='With --aug=fixed: the p used for the whole run', type=float)
@click.option('--target', help='Target of ADA\'s overfitting heuristic r_t, with --aug=ada', type=float)
@click.option('--augpipe', help='ADA pipe preset (ops enabled): bgc, bgcfnc, ... (docs/ada.md) [default: bgc]', metavar='NAME')
# Transfer learning and resume.
@click.option('--resume', help='Resume from a path, URL, preset name, or "latest" under --outdir [default: noresume]', metavar='PKL')
@click.option('--freezed', help='Freeze the first N layers of D (Freeze-D) [default: 0]', type=int, metavar='INT')
# Performance and robustness.
@click.option('--fp32', help='Train everything in float32 (no fp16 blocks)', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Channels-last memory layout for the fp16 blocks', type=bool, metavar='BOOL')
@click.option('--nobench', help='Turn off cuDNN autotuning', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Let matmuls and convolutions use TF32 on Ampere and newer', type=bool, metavar='BOOL')
@click.option('--workers', help='Data-loading worker processes (0 = load in the main process) [default: 3, at most the CPU count]', type=click.IntRange(min=0), metavar='INT')
@click.option('--device', help='Where to train [default: auto = cuda if available, else cpu]', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto')
@click.option('--nonfinite', help='On NaN/Inf in a loss or gradient: skip the step or stop [default: skip]', type=click.Choice(['skip', 'stop']), default='skip')
@click.option('--deterministic', help='Deterministic algorithms (for exact resume)', type=bool, is_flag=False, flag_value=True, default=False, metavar='[BOOL]')
def main(ctx, outdir, dry_run, data, gpus, **config_kwargs):
    """Train a StyleGAN2 generator and discriminator, optionally with data-efficient
    augmentation (ADA, DiffAugment, APA, DAG, ASA and their combinations) chosen by --aug.

    \b
    Examples:
    \b
    # CPU demo on the embedded emoji set.
    python train.py --outdir=training-runs --cfg=tiny --kimg=2 --tick=0.2 --snap=5
    \b
    # Upstream-style transfer learning with ADA on 8 GPUs.
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --gpus=8 --cfg=paper256 \\
        --mirror=1 --resume=ffhq256 --snap=10
    \b
    # Several methods combined.
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --aug=ada:bgc+asa
    """
    rank, world_size = torchrun_env()
    if rank is not None:
        if gpus is not None and gpus != world_size:
            raise click.BadParameter(f'{gpus} differs from torchrun\'s WORLD_SIZE={world_size}; drop --gpus under torchrun', param_hint='--gpus')
        gpus = world_size
    say = click.echo if not rank else (lambda *args, **kwargs: None)
    if data is None:
        data = config.DEFAULT_DATA
        say(f'No --data given: using the embedded demo dataset {os.path.relpath(data)} (Noto emoji, 32x32; see docs/datasets.md).')
    check_outdir(outdir)
    desc, options = config.setup_training_options(outdir=outdir, data=data, gpus=gpus, **config_kwargs)

    if not dry_run:
        prepare_metric_detectors(options['metrics'], verbose=not rank)
    if rank is not None and not dry_run:
        torchrun_init(options['device'])
    if dry_run:
        options['run_dir'] = config.next_run_dir(outdir, desc)
    elif rank is None or rank == 0:
        options['run_dir'] = config.make_run_dir(outdir, desc)
    if rank is not None and not dry_run:
        options['run_dir'] = torchrun_share(options['run_dir'])

    if dry_run:  # a real run keeps the full options in its training_options.json, not on the screen
        say('\nTraining options:')
        say(json.dumps(options, indent=2))
    say(f'\nOutput directory:   {options["run_dir"]}')
    say(f'Training data:      {options["training_set_kwargs"]["path"]}')
    say(f'Training duration:  {options["total_kimg"]:g} kimg')
    say(f'Number of GPUs:     {options["num_gpus"]} ({options["device"]})')
    say(f'Number of images:   {options["training_set_kwargs"]["max_size"]}')
    say(f'Image resolution:   {options["training_set_kwargs"]["resolution"]}')
    say(f'Conditional model:  {options["training_set_kwargs"]["use_labels"]}')
    say(f'Dataset x-flips:    {options["training_set_kwargs"]["xflip"]}')
    say(f'Augmentation:       {options["aug_spec"]}')
    say()
    if dry_run:
        say('Dry run; exiting.')
        return
    if not rank:
        write_options(options['run_dir'], options)
    say('Launching processes...')
    launch(options, rank)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

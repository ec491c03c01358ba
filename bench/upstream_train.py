"""Upstream StyleGAN2-ADA's training throughput, measured the way bench/train.py measures ours.

    python bench/upstream_train.py --upstream=/tmp/sg2ada-fixed --data=ds256.zip --cfg=paper256 --aug=noaug --aug=ada

--upstream must be the harness-fixed copy made by bench/upstream_copy.py (outside this repository).
Its own train.py builds the options (`setup_training_loop_kwargs`) and its own training loop runs one
warm-up tick (one iteration) and one measured tick of --iters iterations on one GPU, with snapshots,
metrics and the start-up image grids (1x1) out of the way, as bench/train.py does for ours. sec/kimg
and peak GPU memory come from its stats.jsonl, process CPU time per kimg from tick to tick. One JSON
line per --aug, with bench/train.py's keys plus `plugins` (whether upstream's CUDA ops really loaded).
Nothing from this repository is imported: upstream's `train`, `training` and `torch_utils` come first.
"""

import json
import os
import sys
import tempfile
import time

import click

#----------------------------------------------------------------------------

def import_upstream(upstream):
    r"""Upstream's train.py and training_loop module, with this script's folder off sys.path."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != here]
    sys.path.insert(0, os.path.abspath(upstream))
    import train                                    # pylint: disable=import-outside-toplevel
    from training import training_loop              # pylint: disable=import-outside-toplevel
    if not os.path.abspath(train.__file__).startswith(os.path.abspath(upstream)):
        raise click.ClickException(f'--upstream={upstream}: imported train.py from {train.__file__} instead')
    return train, training_loop

def _one_image_grid(training_set, random_seed=0):  # pylint: disable=unused-argument
    # Start-up grids are not what we measure: one real image instead of a 7680x4320 grid.
    import numpy as np                              # pylint: disable=import-outside-toplevel
    image, label = training_set[0]
    return (1, 1), np.stack([image]), np.stack([label])

def options(train, data, cfg, aug, iters, batch):
    _desc, args = train.setup_training_loop_kwargs(gpus=1, metrics=[], data=data, cfg=cfg, aug=aug, batch=batch)
    n = args.batch_size
    args.update(total_kimg=(iters + 1) * n / 1000, kimg_per_tick=iters * n / 1000 - 1e-9,
                image_snapshot_ticks=None, network_snapshot_ticks=None)
    return args

def measure(train, training_loop, data, cfg, aug, iters, batch):
    # Upstream's subprocess_fn would call training_stats.init_multiprocessing(rank=0, sync_device=None)
    # first: those are the module's defaults, and a second call (the next --aug) would assert.
    args = options(train, data, cfg, aug, iters, batch)
    from torch_utils.ops import bias_act            # pylint: disable=import-outside-toplevel
    training_loop.setup_snapshot_image_grid = _one_image_grid
    cpu_at_tick = []
    with tempfile.TemporaryDirectory() as run_dir:
        args.run_dir = run_dir
        training_loop.training_loop(rank=0, progress_fn=lambda cur, total: cpu_at_tick.append(time.process_time()), **args)
        with open(os.path.join(run_dir, 'stats.jsonl'), encoding='utf-8') as f:
            stats = [json.loads(line) for line in f][-1]
    kimg = iters * args.batch_size / 1000
    return dict(side='upstream', cfg=cfg, aug=aug, device='cuda', batch=args.batch_size, batch_gpu=args.batch_gpu,
                res=args.training_set_kwargs.resolution, iters=iters, sec_per_kimg=stats['Timing/sec_per_kimg']['mean'],
                cpu_sec_per_kimg=(cpu_at_tick[-1] - cpu_at_tick[-2]) / kimg,
                peak_gpu_mem_gb=stats['Resources/peak_gpu_mem_gb']['mean'], cpu_mem_gb=stats['Resources/cpu_mem_gb']['mean'],
                plugins='cuda' if getattr(bias_act, '_plugin', None) is not None else 'reference (slow path)')

#----------------------------------------------------------------------------

@click.command()
@click.option('--upstream', required=True, help='Harness-fixed upstream copy (bench/upstream_copy.py)')
@click.option('--data', required=True, help='Dataset zip or folder')
@click.option('--cfg', default='paper256', show_default=True, help="Upstream's --cfg")
@click.option('--aug', 'augs', multiple=True, default=['noaug'], show_default=True,
              type=click.Choice(['noaug', 'ada', 'fixed']), help="Upstream's --aug; repeat to compare several")
@click.option('--iters', default=10, show_default=True, type=click.IntRange(min=1), help='Measured iterations')
@click.option('--batch', default=None, type=click.IntRange(min=1), help='Override the preset batch')
@click.option('--dry-run', is_flag=True, help='Only build and print the options (no GPU needed)')
def main(upstream, data, cfg, augs, iters, batch, dry_run):
    """Measure upstream's sec/kimg and peak memory on one GPU."""
    train, training_loop = import_upstream(upstream)
    for aug in augs:
        if dry_run:
            args = options(train, data, cfg, aug, iters, batch)
            print(json.dumps(dict(side='upstream', cfg=cfg, aug=aug, batch=args.batch_size, batch_gpu=args.batch_gpu,
                                  res=args.training_set_kwargs.resolution, total_kimg=args.total_kimg, dry_run=True)))
            continue
        print(json.dumps(measure(train, training_loop, data, cfg, aug, iters, batch)), flush=True)

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

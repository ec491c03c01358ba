"""Training throughput: sec/kimg and peak memory of the real training loop for a config and --aug spec.

Runs training/training_loop.py for one warm-up iteration (tick 0) and then one tick of --iters
iterations, with snapshots off, and reports that tick. Under a shared CPU the wall clock is noisy,
so the process CPU time per kimg is printed too.

    python bench/train.py                                   # --cfg=tiny on the embedded emoji set, CPU
    python bench/train.py --aug=ada:bgc+asa --iters=16
    python bench/train.py --device=cuda --cfg=paper256 --data=~/ffhq256.zip --iters=50
"""

import json
import os
import sys
import tempfile
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import config, image_grid         # noqa: E402
from training.training_loop import training_loop  # noqa: E402

#----------------------------------------------------------------------------
# One measured run; returns a dict of figures for the tick after the warm-up.

def measure(cfg: str, data: str, aug: str, iters: int, batch, batch_gpu, device: str, workers, threads: int) -> dict:
    if device == 'cpu':
        torch.set_num_threads(threads)
    _desc, options = config.setup_training_options(data=data, cfg=cfg, aug=aug, batch=batch, batch_gpu=batch_gpu,
                                                   device=device, workers=workers, metrics=[])
    batch_size = options['batch_size']
    options.update(total_kimg=(iters + 1) * batch_size / 1000, kimg_per_tick=iters * batch_size / 1000 - 1e-9,
                   image_snapshot_ticks=None, network_snapshot_ticks=None)
    cpu_at_tick = []
    with tempfile.TemporaryDirectory() as run_dir:
        options['run_dir'] = run_dir
        image_grid.grid_shape = lambda width, height: (1, 1)  # The start-up grids are not what we measure.
        training_loop(rank=0, **options, progress_fn=lambda cur, total: cpu_at_tick.append(time.process_time()))
        with open(os.path.join(run_dir, 'stats.jsonl')) as f:
            stats = [json.loads(line) for line in f][-1]
    kimg = iters * batch_size / 1000
    return dict(cfg=cfg, aug=options['aug_spec'], device=device, batch=batch_size, batch_gpu=options['batch_gpu'],
                res=options['training_set_kwargs']['resolution'], iters=iters,
                sec_per_kimg=stats['Timing/sec_per_kimg']['mean'], cpu_sec_per_kimg=(cpu_at_tick[-1] - cpu_at_tick[-2]) / kimg,
                peak_gpu_mem_gb=stats['Resources/peak_gpu_mem_gb']['mean'], cpu_mem_gb=stats['Resources/cpu_mem_gb']['mean'])

#----------------------------------------------------------------------------

@click.command()
@click.option('--cfg', default='tiny', show_default=True, help='Preset of train.py')
@click.option('--data', default=None, help='Dataset zip or folder [default: the embedded emoji set]')
@click.option('--aug', 'augs', multiple=True, default=['noaug'], show_default=True, help='--aug spec; repeat to compare several')
@click.option('--iters', default=8, show_default=True, type=click.IntRange(min=1), help='Measured iterations')
@click.option('--batch', default=None, type=int, help='Override the preset batch')
@click.option('--batch-gpu', default=None, type=int, help='Override batch per round')
@click.option('--device', default='cpu', show_default=True, type=click.Choice(['cpu', 'cuda']))
@click.option('--workers', default=None, type=int, help='DataLoader workers [default: 0 on CPU, preset on CUDA]')
@click.option('--threads', default=2, show_default=True, help='torch CPU threads')
@click.option('--md', is_flag=True, help='Also print Markdown table rows')
def main(cfg, data, augs, iters, batch, batch_gpu, device, workers, threads, md):
    """Measure sec/kimg and peak memory of the training loop."""
    data = data or config.DEFAULT_DATA
    workers = (0 if device == 'cpu' else None) if workers is None else workers
    rows = []
    for aug in augs:
        r = measure(cfg, data, aug, iters, batch, batch_gpu, device, workers, threads)
        rows.append(r)
        print(json.dumps(r))
    if md:
        print('| cfg | res | batch | --aug | sec/kimg (wall) | CPU sec/kimg | peak GPU mem GiB | RSS GiB |')
        print('|---|---|---|---|---|---|---|---|')
        for r in rows:
            print(f'| {r["cfg"]} | {r["res"]} | {r["batch"]} | `{r["aug"]}` | {r["sec_per_kimg"]:.1f} | {r["cpu_sec_per_kimg"]:.1f} | '
                  f'{r["peak_gpu_mem_gb"]:.2f} | {r["cpu_mem_gb"]:.2f} |')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

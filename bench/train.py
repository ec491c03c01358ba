"""Training throughput: sec/kimg and peak memory of the real training loop for a config and --aug spec.

Runs training/training_loop.py for one warm-up iteration (tick 0) and then one tick of --iters
iterations, with snapshots off, and reports that tick. Under a shared CPU the wall clock is noisy,
so the process CPU time per kimg is printed too. `--profile` adds two ticks of --iters iterations:
one under torch.profiler (top ops by self CPU time) and one under a host-sync counter (every place
that reads a tensor's value, which a GPU would wait on); their overhead is not in the figures.

    python bench/train.py                                   # --cfg=tiny on the embedded emoji set, CPU
    python bench/train.py --aug=ada:bgc+asa --iters=16
    python bench/train.py --device=cuda --cfg=paper256 --data=~/ffhq256.zip --iters=50
    python bench/train.py --device=cuda --cfg=paper256 --data=~/ffhq256.zip --iters=50 --batch-gpu=auto
    python bench/train.py --profile --iters=4                # where the time goes, and the host syncs
"""

import json
import os
import sys
import tempfile
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.host_sync import HostSyncCounter  # noqa: E402
from training import config, image_grid, loop_setup  # noqa: E402
from training.training_loop import training_loop  # noqa: E402

#----------------------------------------------------------------------------
# Called at the end of every tick: records the process CPU time and, with --profile, runs the
# profiler over the second measured tick and the host-sync counter over the third.

class _TickProbe:
    def __init__(self, profile: bool):
        self.cpu_at_tick = []
        self.profile = profile
        self.profiler = None
        self.syncs = None

    def __call__(self, cur_kimg, total_kimg):
        self.cpu_at_tick.append(time.process_time())
        tick = len(self.cpu_at_tick) - 1
        if not self.profile:
            return
        if tick == 1:
            self.profiler = torch.profiler.profile(activities=_profiler_activities())
            self.profiler.start()
        elif tick == 2:
            self.profiler.stop()
            self.syncs = HostSyncCounter().__enter__()
        elif tick == 3:
            self.syncs.__exit__(None, None, None)


def _profiler_activities() -> list:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities

#----------------------------------------------------------------------------
# One measured run; returns a dict of figures for the tick after the warm-up (and the probe).

def measure(cfg: str, data: str, aug: str, iters: int, batch, batch_gpu, device: str, workers, threads: int, profile: bool = False) -> tuple:
    if device == 'cpu':
        torch.set_num_threads(threads)
    _desc, options = config.setup_training_options(data=data, cfg=cfg, aug=aug, batch=batch, batch_gpu=batch_gpu,
                                                   device=device, workers=workers, metrics=[])
    batch_size = options['batch_size']
    ticks = 3 if profile else 1
    options.update(total_kimg=(ticks * iters + 1) * batch_size / 1000, kimg_per_tick=iters * batch_size / 1000 - 1e-9,
                   image_snapshot_ticks=None, network_snapshot_ticks=None)
    probe = _TickProbe(profile)
    chosen = {}
    resolve = loop_setup.resolve_batch_gpu
    loop_setup.resolve_batch_gpu = lambda *args, **kwargs: chosen.setdefault('batch_gpu', resolve(*args, **kwargs))
    with tempfile.TemporaryDirectory() as run_dir:
        options['run_dir'] = run_dir
        image_grid.grid_shape = lambda width, height: (1, 1)  # The start-up grids are not what we measure.
        training_loop(rank=0, **options, progress_fn=probe)
        with open(os.path.join(run_dir, 'stats.jsonl')) as f:
            stats = [json.loads(line) for line in f][1]
    loop_setup.resolve_batch_gpu = resolve
    kimg = iters * batch_size / 1000
    row = dict(cfg=cfg, aug=options['aug_spec'], device=device, batch=batch_size, batch_gpu=chosen.get('batch_gpu', options['batch_gpu']),
               res=options['training_set_kwargs']['resolution'], iters=iters,
               sec_per_kimg=stats['Timing/sec_per_kimg']['mean'], cpu_sec_per_kimg=(probe.cpu_at_tick[1] - probe.cpu_at_tick[0]) / kimg,
               peak_gpu_mem_gb=stats['Resources/peak_gpu_mem_gb']['mean'], cpu_mem_gb=stats['Resources/cpu_mem_gb']['mean'])
    if profile:
        row['host_syncs_per_iter'] = probe.syncs.total() / iters
    return row, probe


def print_profile(probe: _TickProbe, iters: int, top: int = 25) -> None:
    sort_by = 'self_cuda_time_total' if torch.cuda.is_available() else 'self_cpu_time_total'
    print(probe.profiler.key_averages().table(sort_by=sort_by, row_limit=top))
    print(f'Host syncs over one tick of {iters} iterations (counts include the tick-end reads once):')
    print(probe.syncs.table(per=iters))

#----------------------------------------------------------------------------

@click.command()
@click.option('--cfg', default='tiny', show_default=True, help='Preset of train.py')
@click.option('--data', default=None, help='Dataset zip or folder [default: the embedded emoji set]')
@click.option('--aug', 'augs', multiple=True, default=['noaug'], show_default=True, help='--aug spec; repeat to compare several')
@click.option('--iters', default=8, show_default=True, type=click.IntRange(min=1), help='Measured iterations')
@click.option('--batch', default=None, type=int, help='Override the preset batch')
@click.option('--batch-gpu', default=None, type=config.BATCH_GPU, help='Override batch per round (an integer or auto)')
@click.option('--device', default='cpu', show_default=True, type=click.Choice(['cpu', 'cuda']))
@click.option('--workers', default=None, type=int, help='DataLoader workers [default: 0 on CPU, preset on CUDA]')
@click.option('--threads', default=2, show_default=True, help='torch CPU threads')
@click.option('--md', is_flag=True, help='Also print Markdown table rows')
@click.option('--profile', is_flag=True, help='Also print the top ops (torch.profiler) and the host syncs per iteration')
def main(cfg, data, augs, iters, batch, batch_gpu, device, workers, threads, md, profile):
    """Measure sec/kimg and peak memory of the training loop."""
    data = data or config.DEFAULT_DATA
    workers = (0 if device == 'cpu' else None) if workers is None else workers
    rows = []
    for aug in augs:
        r, probe = measure(cfg, data, aug, iters, batch, batch_gpu, device, workers, threads, profile)
        if profile:
            print_profile(probe, iters)
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

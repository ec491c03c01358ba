"""Per-tick reporting: upstream's status line, stats.jsonl, TensorBoard, and metrics at snapshots."""

from __future__ import annotations

import json
import os
import time

import psutil
import torch

import dnnlib
from dnnlib.progress import eta_seconds
from torch_utils import custom_ops, training_stats
from training import checkpoint

# One short line per tick; memory, maintenance and the rest go to stats.jsonl and TensorBoard only.
STATUS_FORMAT = 'tick %-5d kimg %-14s time %-11s sec/kimg %-7.2f eta %-11s augment %.3f'


def kimg_progress(cur_kimg: float, total_kimg: float) -> str:
    return f'{cur_kimg:.1f}/{total_kimg:g}'

#----------------------------------------------------------------------------
# Method stats on the tick line: every 'Progress/*' value (augmentation probabilities), the first
# value of each other group (e.g. ASA/lambda) and every '*_max' value (a tick's worst case, where
# instability shows, e.g. ASA/q_max); other diagnostics go to stats.jsonl only.

def headline_stats(aug_stats: dict) -> dict:
    shown, groups = {}, set()
    for key, value in aug_stats.items():
        group = key.split('/')[0]
        if key == 'Progress/augment' or (group != 'Progress' and group in groups and not key.endswith('_max')):
            continue
        groups.add(group)
        shown[key] = value
    return shown

#----------------------------------------------------------------------------
# Which op implementation runs (custom CUDA or reference); empty before any op has run.

def impl_summary() -> str:
    report = custom_ops.impl_report()
    if not report:
        return ''
    impls = sorted(set(report.values()))
    if len(impls) == 1:
        return impls[0]
    return ','.join(f'{op}={impl}' for op, impl in report.items())

#----------------------------------------------------------------------------

class TickReporter:
    def __init__(self, run_dir: str, rank: int, device: torch.device, start_time: float, total_kimg: float = None):
        self.run_dir = run_dir
        self.total_kimg = total_kimg
        self.pace_start = None  # (time, kimg) at this process's first tick
        self.last_impl = None
        self.rank = rank
        self.device = device
        self.start_time = start_time
        self.collector = training_stats.Collector(regex='.*')
        self.stats_jsonl = os.path.join(run_dir, 'stats.jsonl')
        self.tfevents = None
        if rank == 0:
            try:
                import torch.utils.tensorboard as tensorboard
                self.tfevents = tensorboard.SummaryWriter(run_dir)
            except ImportError as err:
                print(f'TensorBoard logging off ({err})')

    # Reports the tick's progress stats (all of upstream's keys) and returns the compact status line.
    def status(self, cur_tick, cur_nimg, tick_start_nimg, tick_start_time, tick_end_time, maintenance_time, aug_stats: dict) -> str:
        total_sec = tick_end_time - self.start_time
        sec_per_tick = tick_end_time - tick_start_time
        sec_per_kimg = sec_per_tick / max(cur_nimg - tick_start_nimg, 1) * 1e3
        cpu_mem = psutil.Process(os.getpid()).memory_info().rss / 2**30
        gpu_mem = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == 'cuda' else 0.0
        augment = float(aug_stats.get('Progress/augment', 0.0))
        training_stats.report0('Progress/tick', cur_tick)
        training_stats.report0('Progress/kimg', cur_nimg / 1e3)
        training_stats.report0('Timing/total_sec', total_sec)
        training_stats.report0('Timing/sec_per_tick', sec_per_tick)
        training_stats.report0('Timing/sec_per_kimg', sec_per_kimg)
        training_stats.report0('Timing/maintenance_sec', maintenance_time)
        training_stats.report0('Resources/cpu_mem_gb', cpu_mem)
        training_stats.report0('Resources/peak_gpu_mem_gb', gpu_mem)
        training_stats.report0('Progress/augment', augment)
        cur_kimg = cur_nimg / 1e3
        if self.pace_start is None:
            self.pace_start = (tick_end_time, cur_kimg)
        total_kimg = cur_kimg if self.total_kimg is None else self.total_kimg
        # Time left at the average pace since this process's first tick, snapshots and grids included.
        start_time, start_kimg = self.pace_start
        eta = eta_seconds(cur_kimg - start_kimg, total_kimg - start_kimg, tick_end_time - start_time)
        line = STATUS_FORMAT % (cur_tick, kimg_progress(cur_kimg, total_kimg), dnnlib.util.format_time(total_sec),
                                sec_per_kimg, '-' if eta is None else dnnlib.util.format_time(eta), augment)
        training_stats.report0('Timing/total_hours', total_sec / (60 * 60))
        training_stats.report0('Timing/total_days', total_sec / (24 * 60 * 60))
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        extras = [f'{key.split("/")[-1]} {float(value):.3f}' for key, value in headline_stats(aug_stats).items()]
        for key, value in aug_stats.items():
            if key != 'Progress/augment':
                training_stats.report0(key, float(value))
        impl = impl_summary()
        if impl and impl != self.last_impl:  # said once, and again only if it changes
            extras.append(f'ops {impl}')
        self.last_impl = impl
        return line + ''.join(f'  {e}' for e in extras)

    # Collects everything reported since the last tick (all ranks) and writes it (rank 0).
    def write(self, cur_nimg: int) -> dict:
        self.collector.update()
        stats = self.collector.as_dict()
        timestamp = time.time()
        if self.rank == 0:
            checkpoint.atomic_append_line(self.stats_jsonl, json.dumps(dict(stats, timestamp=timestamp)))
            if self.tfevents is not None:
                global_step = int(cur_nimg / 1e3)
                walltime = timestamp - self.start_time
                for name, value in stats.items():
                    self.tfevents.add_scalar(name, value['mean'], global_step=global_step, walltime=walltime)
                self.tfevents.flush()
        return stats

    def write_metrics(self, results: list, cur_nimg: int) -> None:
        if self.tfevents is None:
            return
        for result in results:
            for name, value in result.results.items():
                self.tfevents.add_scalar(f'Metrics/{name}', value, global_step=int(cur_nimg / 1e3), walltime=time.time() - self.start_time)

    def close(self) -> None:
        if self.tfevents is not None:
            self.tfevents.close()

#----------------------------------------------------------------------------
# Every metric on the snapshot's G_ema, all ranks taking part; rank 0 writes metric-{name}.jsonl.

def evaluate_metrics(metrics: list, G_ema, training_set_kwargs: dict, num_gpus: int, rank: int, device, run_dir: str, snapshot_pkl: str) -> list:
    if not metrics:
        return []
    try:
        from metrics import metric_main
    except ImportError as err:
        if rank == 0:
            print(f'Skipping metrics {metrics}: metrics.metric_main is not available ({err})')
        return []
    results = []
    for metric in metrics:
        # verbose: progress lines with an ETA, so a long metric at a snapshot is not mistaken for a hang.
        result = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=training_set_kwargs, num_gpus=num_gpus, rank=rank,
                                         device=device, verbose=(rank == 0))
        if rank == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
        results.append(result)
    return results

#----------------------------------------------------------------------------

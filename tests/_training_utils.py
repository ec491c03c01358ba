"""Helpers for the training tests: a tiny 16 px dataset, the tiny-preset options, cheap image
grids, and a driver that runs the training loop in a separate process (for kill and multi-process
tests): ``python tests/_training_utils.py '<json>'``.
"""

import io
import json
import os
import sys
import time
import zipfile

import numpy as np
import PIL.Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#----------------------------------------------------------------------------
# A zip of `num` random 16x16 RGB images; labels: None, or a list written to dataset.json.

def make_zip(path, num=32, res=16, labels=None, seed=0):
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, 'w') as z:
        names = []
        for i in range(num):
            img = (rng.random((res, res, 3)) * 255).astype(np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='PNG')
            names.append(f'img{i:03d}.png')
            z.writestr(names[-1], buf.getvalue())
        if labels is not None:
            z.writestr('dataset.json', json.dumps({'labels': [[n, l] for n, l in zip(names, labels)]}))
    return path

#----------------------------------------------------------------------------
# The options train.py writes for --cfg=tiny on a 16 px set (CPU, no workers, deterministic).

def tiny_options(run_dir, data, kimg=0.032, tick=0.016, aug='noaug', **overrides):
    options = dict(
        num_gpus=1, image_snapshot_ticks=1, network_snapshot_ticks=1, metrics=[], random_seed=0,
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False, max_size=None, xflip=False, resolution=16),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0, prefetch_factor=2),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=64, w_dim=64, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=None)),
        D_kwargs=dict(class_name='training.networks.Discriminator', block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4),
                      channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=None),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.05),
        total_kimg=kimg, batch_size=8, batch_gpu=8, ema_kimg=2.5, ema_rampup=0.05,
        kimg_per_tick=tick, aug_spec=aug, device='cpu', nonfinite='skip', deterministic=True,
        G_reg_interval=2, D_reg_interval=2, run_dir=run_dir)
    options.update(overrides)
    return options

#----------------------------------------------------------------------------
# 4x2 grids instead of 32x32: the grid layout has its own unit test; this keeps runs short.

def cheap_grids():
    from training import image_grid
    image_grid.grid_shape = lambda width, height: (4, 2)

#----------------------------------------------------------------------------
# Child-process entry: optional process group, optional fault, then the training loop; saves
# the final G, D and G_ema state of this rank to out_dir/rank{r}.pt.

def _child(cfg):
    import torch
    torch.set_num_threads(1)
    cheap_grids()
    rank, world = cfg.get('rank', 0), cfg.get('world', 1)
    from training import checkpoint, distributed, loop_setup
    if world > 1:
        distributed.init_distributed(rank, world, cfg['init_method'], device='cpu', timeout_s=cfg.get('timeout_s', 60))
    captured = {}
    build = loop_setup.build_networks
    def build_and_capture(*args, **kwargs):
        captured['nets'] = build(*args, **kwargs)
        return captured['nets']
    loop_setup.build_networks = build_and_capture
    fault = cfg.get('fault')
    if fault == 'stall_pkl_write':
        # Simulate a kill in the middle of writing the second snapshot: half the bytes reach a
        # temp file in the run folder, then the process waits to be killed.
        original = checkpoint.atomic_write_bytes
        count = [0]
        def stalling_write(path, data):
            if path.endswith('.pkl'):
                count[0] += 1
                if count[0] == 2:
                    with open(os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.partial.tmp'), 'wb') as f:
                        f.write(data[:len(data) // 2])
                    open(cfg['marker'], 'w').close()
                    time.sleep(600)
            return original(path, data)
        checkpoint.atomic_write_bytes = stalling_write
    from training import run_state
    from training.training_loop import training_loop
    build_aug = loop_setup.build_augment
    def build_aug_and_capture(*args, **kwargs):
        captured['augment'] = build_aug(*args, **kwargs)
        return captured['augment']
    loop_setup.build_augment = build_aug_and_capture
    # cfg['runs'] (optional): several runs in turn in this process group, e.g. for an exact-resume
    # check; each is {'name', 'options', 'abort_at_tick'} and saves {name}_rank{r}.pt.
    runs = cfg.get('runs') or [dict(name='', options=cfg['options'])]
    for run in runs:
        options = dict(run['options'])
        if fault == 'die_rank1' and rank == 1:
            options['progress_fn'] = lambda cur_kimg, total_kimg: os.kill(os.getpid(), 9)
        if run.get('abort_at_tick') is not None:
            options['abort_fn'] = lambda ticks=[], last=run['abort_at_tick']: ticks.append(0) or len(ticks) > last
        training_loop(rank=rank, **options)
        G, D, G_ema = captured['nets']
        augment = captured['augment']
        prefix = f'{run["name"]}_' if run['name'] else ''
        torch.save({'G': G.state_dict(), 'D': D.state_dict(), 'G_ema': G_ema.state_dict(), 'augment_modules': augment.state_dict(),
                    'plugin_state': run_state.to_weights_only(augment.plugin_state())}, os.path.join(cfg['out_dir'], f'{prefix}rank{rank}.pt'))


if __name__ == '__main__':
    _child(json.loads(sys.argv[1]))

#----------------------------------------------------------------------------

"""The StyleGAN2 training loop: orchestration only (setup, iterations, ticks). The pieces live in
loop_setup, phases, run_state, tick_report, checkpoint and nonfinite."""

import time

import torch

import dnnlib
from asa_plugin import ada
from asa_plugin.base import PluginContext
from torch_utils import training_stats
from training import checkpoint, distributed, graceful, image_grid, loop_setup, phases as phases_mod, regularizers, run_state
from training.nonfinite import NonFiniteGuard
from training.tick_report import TickReporter, evaluate_metrics

#----------------------------------------------------------------------------
# Upstream's keyword arguments plus ours (docs/design.md "train.py -> training_loop"): the keys of
# training_options.json. The dict defaults are only read, never modified.

def training_loop(
    run_dir                 = '.',      # Output folder of this run.
    training_set_kwargs     = {},       # Dataset constructor: class_name and its arguments.
    data_loader_kwargs      = {},       # torch DataLoader options (workers, pin_memory, prefetch).
    G_kwargs                = {},       # Generator constructor: class_name and its arguments.
    D_kwargs                = {},       # Discriminator constructor: class_name and its arguments.
    G_opt_kwargs            = {},       # G's optimizer: class_name and its arguments.
    D_opt_kwargs            = {},       # D's optimizer: class_name and its arguments.
    augment_kwargs          = None,     # Upstream's pipe; read only when aug_spec is absent (an upstream options file).
    loss_kwargs             = {},       # Loss: class_name and its arguments.
    metrics                 = [],       # Metric names evaluated at each network snapshot.
    random_seed             = 0,        # Global seed; each rank adds its rank.
    num_gpus                = 1,        # Number of processes taking part.
    rank                    = 0,        # This process's rank.
    batch_size              = 4,        # Total batch over all ranks.
    batch_gpu               = 4,        # Images per rank per accumulation round, or 'auto' (training/batch_gpu.py).
    ema_kimg                = 10,       # Half-life of G_ema in thousands of images.
    ema_rampup              = None,     # G_ema half-life ramp-up ratio, None = off.
    G_reg_interval          = 4,        # Lazy path-length regularization every this many iterations.
    D_reg_interval          = 16,       # Lazy R1 every this many iterations.
    augment_p               = 0,        # Upstream's initial/constant p; read only without aug_spec.
    ada_target              = None,     # Upstream's ADA target; read only without aug_spec.
    ada_interval            = None,     # Upstream's ADA update interval; read only without aug_spec.
    ada_kimg                = None,     # Upstream's ADA speed; read only without aug_spec.
    total_kimg              = 25000,    # Length of the run in thousands of real images.
    kimg_per_tick           = 4,        # Progress line every this many thousand images.
    image_snapshot_ticks    = 50,       # Image grid every this many ticks, 0 = never.
    network_snapshot_ticks  = 50,       # Snapshot and metrics every this many ticks, 0 = never.
    resume_pkl              = None,     # Snapshot whose weights start the run.
    resume_state            = None,     # training-state-*.pt for an exact resume.
    cudnn_benchmark         = True,     # cuDNN autotuning (off when deterministic).
    allow_tf32              = False,    # TF32 matmuls and convolutions.
    abort_fn                = None,     # Callable -> bool that stops the run at the next tick.
    progress_fn             = None,     # Callable(cur_kimg, total_kimg) at each tick.
    aug_spec                = None,     # Canonical --aug spec, the augmentation's one truth.
    device                  = 'cuda',   # 'cuda' or 'cpu'.
    nonfinite               = 'skip',   # Non-finite losses: 'skip' the step or 'stop'.
    deterministic           = False,    # Deterministic algorithms (exact-resume tests).
    **unused_options,                   # Other keys of an options file, reported once.
):
    start_time = time.time()
    device = loop_setup.setup_device(device, rank, random_seed, num_gpus, cudnn_benchmark, allow_tf32, deterministic)
    training_stats.init_multiprocessing(rank=rank, sync_device=device if num_gpus > 1 else None)
    if batch_gpu != 'auto' and batch_size % (batch_gpu * num_gpus) != 0:
        raise ValueError(f'batch_size={batch_size} must be a multiple of batch_gpu*num_gpus={batch_gpu * num_gpus}; fix --batch or --batch-gpu')
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    if unused_options:
        say(f'Note: ignoring options the training loop does not use: {", ".join(sorted(unused_options))}')

    say('Loading training set...')
    training_set = loop_setup.setup_dataset(training_set_kwargs)
    say(f'\nNum images:  {len(training_set)}\nImage shape: {training_set.image_shape}\nLabel shape: {training_set.label_shape}\n')

    say('Constructing networks...')
    G, D, G_ema = loop_setup.build_networks(training_set, G_kwargs, D_kwargs, device)
    if batch_gpu == 'auto':
        batch_gpu = loop_setup.resolve_batch_gpu(G, D, loss_kwargs, batch_size, num_gpus, D_kwargs, device, say)
    if rank == 0:
        loop_setup.print_summaries(G, D, batch_gpu, device)
    plugin_entry = loop_setup.resume_networks(resume_pkl, G, D, G_ema, rank) if resume_pkl else None

    say('Setting up augmentation...')
    spec = aug_spec or ada.spec_from_upstream_options(augment_kwargs, augment_p, ada_target, ada_interval, ada_kimg)
    ctx = PluginContext(device=device, c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels,
                        batch_size=batch_size, batch_gpu=batch_gpu, num_gpus=num_gpus, rank=rank, total_kimg=total_kimg, resumed=bool(resume_pkl), D=D)
    augment = loop_setup.build_augment(spec, ctx)
    plugin_entry = distributed.broadcast_object(plugin_entry)
    if plugin_entry and plugin_entry.get('spec') == augment.spec:
        augment.load_plugin_state(plugin_entry['state'])
    elif plugin_entry:
        say(f'WARNING: the resume pickle was trained with --aug={plugin_entry.get("spec")}, now --aug={augment.spec}; augmentation state starts fresh.')
    say(f'Augmentation: {augment.describe()}')
    loop_setup.broadcast_all(G, D, G_ema, augment)

    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment=augment, **loss_kwargs)
    phases = phases_mod.build_phases(G, D, augment, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
    for phase in phases:
        for p in phase.params:
            p.requires_grad_(False)
    guard = NonFiniteGuard(nonfinite, rank)

    if rank == 0:
        say('Exporting sample images...')
        grid_size, images, labels = image_grid.setup_snapshot_image_grid(training_set)
        image_grid.save_image_grid(images, f'{run_dir}/reals.png', drange=[0, 255], grid_size=grid_size)
        grid_z = torch.randn([labels.shape[0], G.z_dim], device=device)
        grid_c = torch.from_numpy(labels).to(device)
        image_grid.save_image_grid(image_grid.generate_grid(G_ema, grid_z, grid_c, batch_gpu), f'{run_dir}/fakes_init.png', drange=[-1, 1], grid_size=grid_size)

    progress = dict(cur_nimg=0, cur_tick=0, batch_idx=0, tick_start_nimg=0, ema_rampup=ema_rampup)
    if resume_state:
        state = distributed.broadcast_object(checkpoint.load_state(resume_state, resume_pkl) if rank == 0 else None)
        progress = run_state.restore_training_state(state, phases, loss, augment, guard, device, rank)
        say(f'Exact resume from "{resume_state}" at kimg {progress["cur_nimg"] / 1000:.1f}, tick {progress["cur_tick"]}')
    data_iter = loop_setup.data_iterator(training_set, data_loader_kwargs, rank, num_gpus, batch_size, random_seed, progress['batch_idx'], device)
    reporter = TickReporter(run_dir, rank, device, start_time, total_kimg)

    say(f'Training for {total_kimg} kimg...\n')
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    with graceful.stop_on_sigterm() as stop:
        while True:
            batch = phases_mod.fetch_batch(data_iter, training_set, phases, batch_gpu, G.z_dim, device)
            phases_mod.run_phases(phases, loss, guard, batch, progress['batch_idx'], progress['cur_nimg'], device)
            phases_mod.update_ema(G, G_ema, regularizers.ema_beta(batch_size, ema_kimg, progress['ema_rampup'], progress['cur_nimg']))
            progress['cur_nimg'] += batch_size
            progress['batch_idx'] += 1
            augment.update(progress['cur_nimg'], batch_size)

            done = progress['cur_nimg'] >= total_kimg * 1000 or stop.requested
            if num_gpus > 1:
                done = distributed.any_rank(done, device)  # Every rank must take the same branch.
            if not done and progress['cur_tick'] != 0 and progress['cur_nimg'] < progress['tick_start_nimg'] + kimg_per_tick * 1000:
                continue

            # Tick: report, snapshot, evaluate. None of it may shift the training's random streams.
            tick_end_time = time.time()
            rng = run_state.capture_rng(device)
            cur_tick, cur_nimg = progress['cur_tick'], progress['cur_nimg']
            say(reporter.status(cur_tick, cur_nimg, progress['tick_start_nimg'], tick_start_time, tick_end_time, maintenance_time, augment.stats()))
            if stop.requested or (abort_fn is not None and abort_fn()):
                done = True
                say(f'\nAborting{" on SIGTERM: writing a final snapshot" if stop.requested else ""}...')
            done = distributed.any_rank(done, device)  # One rank aborting must not leave the others waiting.
            for module in (G, D, G_ema):
                distributed.broadcast_buffers(module)  # w_avg follows each rank's batches; keep rank 0's.
            if rank == 0 and image_snapshot_ticks and (done or cur_tick % image_snapshot_ticks == 0):
                fakes = image_grid.generate_grid(G_ema, grid_z, grid_c, batch_gpu)
                image_grid.save_image_grid(fakes, checkpoint.fresh_path(run_dir, cur_nimg, 'fakes{}.png'), drange=[-1, 1], grid_size=grid_size)
            if network_snapshot_ticks and (done or cur_tick % network_snapshot_ticks == 0):
                distributed.check_in_sync({'G': G, 'D': D, 'G_ema': G_ema, 'augment': augment})
                next_progress = dict(progress, cur_tick=cur_tick + 1, tick_start_nimg=cur_nimg)
                state = run_state.training_state(next_progress, phases, loss, augment, guard, rng)
                snapshot_pkl = None
                if rank == 0:
                    snapshot = run_state.snapshot_data(G, D, G_ema, augment, training_set_kwargs)
                    snapshot_pkl = checkpoint.save_checkpoint(run_dir, cur_nimg, snapshot, state)
                snapshot_pkl = distributed.broadcast_object(snapshot_pkl)
                results = evaluate_metrics(metrics, G_ema, training_set_kwargs, num_gpus, rank, device, run_dir, snapshot_pkl)
                reporter.write_metrics(results, cur_nimg)
            phases_mod.report_timings(phases)
            guard.report()
            reporter.write(cur_nimg)
            if progress_fn is not None:
                progress_fn(cur_nimg // 1000, total_kimg)
            run_state.restore_rng(rng, device)

            progress.update(cur_tick=cur_tick + 1, tick_start_nimg=cur_nimg)
            tick_start_time = time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done:
                break

    reporter.close()
    say('\nExiting...')

#----------------------------------------------------------------------------

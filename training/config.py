"""Training configuration: upstream's presets and option rules, turned into `training_options.json`.

`setup_training_options(...)` takes the train.py options (None = not given, as upstream), validates
them, and returns the run-name suffix and the options dict in upstream's key order
(docs/compatibility.md §2.1) followed by ours (docs/design.md "train.py -> training_loop").
Every error is a `click.BadParameter` that names the flag and the fix.
"""

from __future__ import annotations

import copy
import json
import os
import re

import click


#----------------------------------------------------------------------------
# --cfg presets, one row each (docs/compatibility.md §1.1); -1 = derived from the resolution ('auto').
# cbase = channel_base, cmax = channel_max, zdim = z_dim = w_dim, fp16 = num_fp16_res.

PRESETS = {
    'auto':      dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, cbase=-1,    cmax=512, lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2, zdim=512, fp16=4, clamp=256),
    'stylegan2': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  cbase=32768, cmax=512, lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8, zdim=512, fp16=4, clamp=256),
    'paper256':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  cbase=16384, cmax=512, lrate=0.0025, gamma=1,    ema=20,  ramp=None, map=8, zdim=512, fp16=4, clamp=256),
    'paper512':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  cbase=32768, cmax=512, lrate=0.0025, gamma=0.5,  ema=20,  ramp=None, map=8, zdim=512, fp16=4, clamp=256),
    'paper1024': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  cbase=32768, cmax=512, lrate=0.002,  gamma=2,    ema=10,  ramp=None, map=8, zdim=512, fp16=4, clamp=256),
    'cifar':     dict(ref_gpus=2,  kimg=100000, mb=64, mbstd=32, cbase=32768, cmax=512, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2, zdim=512, fp16=4, clamp=256),
    'tiny':      dict(ref_gpus=1,  kimg=200,    mb=16, mbstd=4,  cbase=1024,  cmax=64,  lrate=0.0025, gamma=0.05, ema=2.5, ramp=0.05, map=2, zdim=64,  fp16=0, clamp=None),
    # DiffAugment's low-shot StyleGAN2 row (its PyTorch port's cfg low_shot, docs/augmentations.md):
    # batch 8 on however many GPUs, snapshots every 10 ticks unless --snap is given.
    'lowshot':   dict(ref_gpus=-1, kimg=300,    mb=8,  mbstd=4,  cbase=32768, cmax=512, lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=2, zdim=512, fp16=4, clamp=256, snap=10),
}

# --resume presets (docs/compatibility.md §1.3): pickle URL and the --cfg it was trained with.
_CDN = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/'
RESUME_PRESETS = {
    'ffhq256':     (_CDN + 'ffhq-res256-mirror-paper256-noaug.pkl', 'paper256', 256),
    'ffhq512':     (_CDN + 'ffhq-res512-mirror-stylegan2-noaug.pkl', 'stylegan2', 512),
    'ffhq1024':    (_CDN + 'ffhq-res1024-mirror-stylegan2-noaug.pkl', 'stylegan2', 1024),
    'celebahq256': (_CDN + 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl', 'paper256', 256),
    'lsundog256':  (_CDN + 'lsundog-res256-paper256-kimg100000-noaug.pkl', 'paper256', 256),
}

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'datasets', 'emoji32.zip')

#----------------------------------------------------------------------------

def _bad(flag: str, message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint=flag)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


# Loud multi-line warning on stderr (resume mismatches must not go unnoticed, issue #279).
def warn_loud(title: str, lines: list) -> None:
    bar = '!' * 78
    click.secho('\n'.join([bar, f'WARNING: {title}', *[f'  {line}' for line in lines], bar]), fg='yellow', err=True)

#----------------------------------------------------------------------------
# The 'auto' row for a resolution and GPU count (docs/compatibility.md §1.1).

def auto_preset(res: int, gpus: int) -> dict:
    spec = dict(PRESETS['auto'])
    spec['ref_gpus'] = gpus
    spec['mb'] = max(min(gpus * min(4096 // res, 32), 64), gpus)
    spec['mbstd'] = min(spec['mb'] // gpus, 4)
    spec['cbase'] = 32768 if res >= 512 else 16384
    spec['lrate'] = 0.002 if res >= 1024 else 0.0025
    spec['gamma'] = 0.0002 * (res ** 2) / spec['mb']
    spec['ema'] = spec['mb'] * 10 / 32
    return spec


# G_kwargs / D_kwargs of a preset row, in upstream's key order.
def network_kwargs(spec: dict) -> tuple:
    G_kwargs = dict(class_name='training.networks.Generator', z_dim=spec['zdim'], w_dim=spec['zdim'],
                    mapping_kwargs=dict(num_layers=spec['map']),
                    synthesis_kwargs=dict(channel_base=spec['cbase'], channel_max=spec['cmax'], num_fp16_res=spec['fp16'], conv_clamp=spec['clamp']))
    D_kwargs = dict(class_name='training.networks.Discriminator', block_kwargs=dict(), mapping_kwargs=dict(),
                    epilogue_kwargs=dict(mbstd_group_size=spec['mbstd']),
                    channel_base=spec['cbase'], channel_max=spec['cmax'], num_fp16_res=spec['fp16'], conv_clamp=spec['clamp'])
    return G_kwargs, D_kwargs

#----------------------------------------------------------------------------
# Dataset: opened once to learn its name, resolution, size and labels (before anything is written).

def dataset_options(args: dict, data: str, cond: bool, subset, mirror: bool, seed: int) -> tuple:
    """Fills the dataset keys; returns (desc, c_dim)."""
    from training.dataset import DatasetError, ImageFolderDataset
    try:
        training_set = ImageFolderDataset(path=data, use_labels=cond, max_size=None, xflip=False)
        resolution, size, name, c_dim = training_set.resolution, len(training_set), training_set.name, training_set.label_dim
        training_set.close()
    except DatasetError as e:
        raise _bad('--cond' if cond and 'labels requested' in str(e) else '--data', str(e)) from e
    if not _is_power_of_two(resolution) or resolution < 4:
        raise _bad('--data', f'{data}: resolution {resolution} is not a power of two >= 4; rebuild it with dataset_tool.py --resolution=N')
    args['training_set_kwargs'] = dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=bool(cond),
                                       max_size=size, xflip=False, resolution=resolution)
    args['data_loader_kwargs'] = dict(pin_memory=True, num_workers=3, prefetch_factor=2)
    desc = name + ('-cond' if cond else '')
    if subset is not None:
        if not 1 <= subset <= size:
            raise _bad('--subset', f'must be between 1 and {size} (the number of images in {data})')
        desc += f'-subset{subset}'
        if subset < size:
            args['training_set_kwargs']['max_size'] = subset
            args['training_set_kwargs']['random_seed'] = seed
    if mirror:
        desc += '-mirror'
        args['training_set_kwargs']['xflip'] = True
    return desc, c_dim

#----------------------------------------------------------------------------
# --batch-gpu: a positive integer or 'auto'.

class _BatchGpu(click.ParamType):
    name = 'batch_gpu'

    def convert(self, value, param, ctx):
        if value == 'auto' or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f'{value!r} is neither a positive integer nor "auto"', param, ctx)
        return number

BATCH_GPU = _BatchGpu()

#----------------------------------------------------------------------------
# Base preset plus the --gamma/--kimg/--batch/--batch-gpu overrides.

def preset_options(args: dict, cfg: str, gpus: int, gamma, kimg, batch, batch_gpu) -> str:
    res = args['training_set_kwargs']['resolution']
    spec = auto_preset(res, gpus) if cfg == 'auto' else dict(PRESETS[cfg])
    if spec['ref_gpus'] < 0:    # a row for any GPU count: the batch is split over the GPUs given
        spec['ref_gpus'] = gpus
    desc = f'-{cfg}' + (f'{gpus}' if cfg == 'auto' else '')
    args['G_kwargs'], args['D_kwargs'] = network_kwargs(spec)
    opt = dict(class_name='torch.optim.Adam', lr=spec['lrate'], betas=[0, 0.99], eps=1e-8)
    args['G_opt_kwargs'], args['D_opt_kwargs'] = dict(opt), dict(opt, betas=[0, 0.99])
    args['loss_kwargs'] = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec['gamma'])
    args['total_kimg'] = spec['kimg']
    args['batch_size'] = spec['mb']
    args['batch_gpu'] = min(spec['mb'] // spec['ref_gpus'], spec['mb'] // gpus) # = upstream unless gpus > ref_gpus
    args['ema_kimg'] = spec['ema']
    args['ema_rampup'] = spec['ramp']
    if cfg == 'cifar':
        # CIFAR preset: no PL regularizer, no mixing regularization, plain (non-resnet) D.
        args['loss_kwargs']['pl_weight'] = 0
        args['loss_kwargs']['style_mixing_prob'] = 0
        args['D_kwargs']['architecture'] = 'orig'
    if gamma is not None:
        if gamma < 0:
            raise _bad('--gamma', 'must be non-negative')
        desc += f'-gamma{gamma:g}'
        args['loss_kwargs']['r1_gamma'] = gamma
    if kimg is not None:
        if not kimg > 0:
            raise _bad('--kimg', 'must be positive (fractions such as 0.2 are fine)')
        desc += f'-kimg{kimg:g}'
        args['total_kimg'] = int(kimg) if float(kimg).is_integer() else float(kimg)
    if batch is not None:
        if batch < 1 or batch % gpus != 0:
            raise _bad('--batch', f'must be at least 1 and divisible by --gpus={gpus}')
        desc += f'-batch{batch}'
        args['batch_size'] = batch
        args['batch_gpu'] = batch // gpus
    if batch_gpu == 'auto':
        args['batch_gpu'] = 'auto'  # Resolved by the training loop from free GPU memory (training/batch_gpu.py).
        return desc
    if batch_gpu is not None:
        args['batch_gpu'] = batch_gpu
    per_round = args['batch_gpu'] * gpus
    if args['batch_gpu'] < 1 or args['batch_size'] % per_round != 0:
        flag = '--batch-gpu' if batch_gpu is not None else '--batch' if batch is not None else '--gpus'
        raise _bad(flag, f'batch {args["batch_size"]} is not a multiple of batch_gpu {args["batch_gpu"]} x {gpus} GPUs; '
                         f'pick --batch and --batch-gpu so that batch = k * batch_gpu * gpus')
    mbstd = args['D_kwargs']['epilogue_kwargs']['mbstd_group_size']
    if args['batch_gpu'] > mbstd and args['batch_gpu'] % mbstd != 0:
        raise _bad('--batch-gpu', f'{args["batch_gpu"]} images per GPU cannot be split into minibatch-std groups of {mbstd}; use a multiple of {mbstd}')
    return desc

#----------------------------------------------------------------------------
# --aug: upstream's noaug/ada/fixed with --p/--target/--augpipe, or an asa_plugin spec.
# Returns (desc, canonical aug_spec).

UPSTREAM_AUGS = ('noaug', 'ada', 'fixed')


# Parsed and checked by asa_plugin without building anything; returns the canonical text.
def _check_spec(spec: str) -> str:
    import asa_plugin  # here, not at the top: importing it loads torch, and train.py --help must not wait
    try:
        return asa_plugin.validate_spec(spec)
    except asa_plugin.SpecError as e:
        raise _bad('--aug', str(e).strip('"\'')) from e


def aug_options(args: dict, aug, p, target, augpipe) -> tuple:
    from asa_plugin import ada
    desc = ''
    if aug is not None and aug not in UPSTREAM_AUGS:
        for flag, value in (('--p', p), ('--target', target), ('--augpipe', augpipe)):
            if value is not None:
                raise _bad(flag, 'only works with --aug=noaug|ada|fixed; with a spec write it as a method option, e.g. --aug=ada:bgc,target=0.6 or fixed:bgc,p=0.2')
        if not re.fullmatch(r'[A-Za-z0-9_.,:=+\-]+', aug):
            raise _bad('--aug', f'"{aug}" is not a spec: write method[:option,...] joined by "+", e.g. ada:bgc,target=0.6')
        return '-' + re.sub(r'[^A-Za-z0-9.+_-]', '-', aug.replace('=', '')), _check_spec(aug)
    if aug is None:
        aug = 'ada'
    else:
        desc += f'-{aug}'
    if aug == 'ada':
        args['ada_target'] = 0.6
    elif aug == 'fixed' and p is None:
        raise _bad('--p', '--aug=fixed requires specifying --p (augmentation probability 0..1)')
    for flag, value, owner, key in [('--p', p, 'fixed', 'augment_p'), ('--target', target, 'ada', 'ada_target')]:
        if value is None:
            continue
        if aug != owner:
            raise _bad(flag, f'can only be specified with --aug={owner}')
        if not 0 <= value <= 1:
            raise _bad(flag, 'must be between 0 and 1')
        desc += f'-{flag[2:]}{value:g}'
        args[key] = value
    if augpipe is not None:
        if aug == 'noaug':
            raise _bad('--augpipe', 'cannot be specified with --aug=noaug')
        if augpipe not in ada.PRESETS:
            raise _bad('--augpipe', f'unknown preset "{augpipe}"; choose one of {", ".join(ada.PRESETS)} (docs/ada.md)')
        desc += f'-{augpipe}' # only an explicit choice shows in the run name
    if aug != 'noaug': # For readers of upstream's training_options.json; the loop reads aug_spec only.
        args['augment_kwargs'] = dict(class_name='training.augment.AugmentPipe', **ada.pipe_kwargs(augpipe or 'bgc'))
    return desc, _check_spec(ada.upstream_spec(aug, p=p, target=args.get('ada_target'), augpipe=augpipe))

#----------------------------------------------------------------------------
# Architecture recorded in a resume pickle, compared with --cfg. Keys that depend on the dataset
# or only on numerics/batching are ours to choose and are skipped.

_NOT_ARCH = {'c_dim', 'img_resolution', 'img_channels', 'num_fp16_res', 'conv_clamp', 'fp16_channels_last',
             'freeze_layers', 'mbstd_group_size', 'class_name'}


def _plain(value):
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, 'item') else str(o)))


def merge_architecture(cfg_kwargs: dict, pkl_kwargs: dict, prefix: str) -> list:
    """Overwrite architecture keys of `cfg_kwargs` with the pickle's; returns 'key: cfg -> pkl' lines."""
    diffs = []
    for key, value in pkl_kwargs.items():
        if key in _NOT_ARCH:
            continue
        value = _plain(value)
        if isinstance(value, dict) and isinstance(cfg_kwargs.get(key), dict):
            diffs += merge_architecture(cfg_kwargs[key], value, f'{prefix}.{key}')
        elif cfg_kwargs.get(key, '<default>') != value:
            diffs.append(f'{prefix}.{key}: {cfg_kwargs.get(key, "<default>")} -> {value}')
            cfg_kwargs[key] = copy.deepcopy(value)
    return diffs


# Init kwargs of G and D in the resume pickle: from the preset table, or by loading a local file
# with the safe loader. None when they cannot be known before training starts (remote URL).
def pickle_architecture(resume: str, resume_pkl: str):
    if resume in RESUME_PRESETS:
        _url, cfg, res = RESUME_PRESETS[resume]
        G_kwargs, D_kwargs = network_kwargs(PRESETS[cfg])
        return dict(G_kwargs, img_resolution=res, c_dim=0), dict(D_kwargs, img_resolution=res, c_dim=0)
    if not os.path.isfile(resume_pkl):
        return None
    try:
        import legacy
        with open(resume_pkl, 'rb') as f:
            data = legacy.load_network_pkl(f)
        return dict(data['G'].init_kwargs), dict(data['D'].init_kwargs)
    except (ImportError, AttributeError, KeyError) as e:
        warn_loud('cannot read the architecture of the resume pickle', [f'{resume_pkl}: {e}', 'using --cfg as is'])
        return None
    except Exception as e: # The loader's own errors (corrupt, unsafe) are reported at the CLI.
        raise _bad('--resume', f'{resume_pkl}: {e}') from e


# Constructor defaults of architecture keys that --cfg may set but a pickle records only when given.
_ARCH_DEFAULTS = dict(D=dict(architecture='resnet'))


def adopt_architecture(args: dict, resume: str, resume_pkl: str, c_dim: int) -> None:
    arch = pickle_architecture(resume, resume_pkl)
    if arch is None:
        return
    G_init, D_init = arch
    # The pickle's omitted keys are its constructor's defaults; where --cfg omits them too, nothing differs.
    D_init = {**_ARCH_DEFAULTS['D'], **D_init}
    D_init = {k: v for k, v in D_init.items() if k in args['D_kwargs'] or _ARCH_DEFAULTS['D'].get(k, object()) != v}
    diffs = merge_architecture(args['G_kwargs'], G_init, 'G_kwargs') + merge_architecture(args['D_kwargs'], D_init, 'D_kwargs')
    res = args['training_set_kwargs']['resolution']
    if G_init.get('img_resolution', res) != res:
        diffs.append(f'resolution: dataset {res} != pickle {G_init["img_resolution"]} (only matching layers will be copied)')
    if G_init.get('c_dim', c_dim) != c_dim:
        diffs.append(f'labels: c_dim {c_dim} (--cond) != pickle {G_init["c_dim"]} (the label embedding will not be copied)')
    if diffs:
        warn_loud(f'--resume={resume}: its architecture differs from --cfg; using the pickle\'s', diffs)

#----------------------------------------------------------------------------
# --resume: preset, path, URL or 'latest'. Returns (desc, resume_state or None).

def resume_options(args: dict, resume, outdir: str, c_dim: int = 0, aug_spec: str | None = None) -> tuple:
    if resume is None or resume == 'noresume':
        return ('-noresume' if resume == 'noresume' else ''), None
    state = None
    if resume in RESUME_PRESETS:
        desc, pkl = f'-resume{resume}', RESUME_PRESETS[resume][0]
    elif resume == 'latest':
        from training import checkpoint
        try:
            # Only runs on the same dataset with the same options qualify (training/run_match.py).
            pkl, state = checkpoint.find_latest(outdir, options=dict(args, aug_spec=aug_spec), note=lambda m: click.echo(m, err=True))
        except FileNotFoundError as e:
            raise _bad('--resume', str(e)) from e
        desc = '-resumelatest'
    elif re.match(r'^[a-z]+://', resume):
        desc, pkl = '-resumecustom', resume
        click.echo(f'Note: --resume={resume} is downloaded by the training loop; its architecture is checked there.', err=True)
    else:
        if not os.path.isfile(resume):
            raise _bad('--resume', f'{resume}: no such file; pass a .pkl path, a URL, latest, or one of {", ".join(RESUME_PRESETS)}')
        from training import checkpoint
        try:
            checkpoint.check_snapshot(resume)
        except FileNotFoundError as e:
            raise _bad('--resume', str(e)) from e
        state = checkpoint.snapshot_status(resume)[1] # The training state that records this pickle's digest, if any.
        if state is not None:
            # Exact resume only continues the same run; another dataset or --aug makes it a fine-tune.
            from training import run_match
            diffs = run_match.run_differences(os.path.dirname(os.path.abspath(resume)), dict(args, aug_spec=aug_spec))
            if diffs:
                click.echo(f'Note: --resume={resume}: weights only (fine-tuning), not an exact resume: '
                           f'this run differs from the one that wrote it ({"; ".join(diffs)})', err=True)
                state = None
        desc, pkl = '-resumecustom', resume
    args['resume_pkl'] = pkl
    if state is None: # Transfer learning (upstream): ADA reacts faster, no EMA ramp-up.
        args['ada_kimg'] = 100
        args['ema_rampup'] = None
    adopt_architecture(args, resume, pkl, c_dim)
    return desc, state

#----------------------------------------------------------------------------
# DataLoader workers: more worker processes than CPUs only compete for them (and torch warns).

def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError: # macOS and Windows have no affinity masks.
        return os.cpu_count() or 1


def capped_workers(requested: int, cpus: int) -> int:
    return min(requested, max(cpus, 1))

#----------------------------------------------------------------------------
# Performance switches (docs/compatibility.md §1): they change values in place or append upstream's keys.

def perf_options(args: dict, fp32, nhwc, nobench, allow_tf32, workers, device: str) -> None:
    if fp32:
        for kwargs in (args['G_kwargs']['synthesis_kwargs'], args['D_kwargs']):
            kwargs['num_fp16_res'] = 0
            kwargs['conv_clamp'] = None
    if nhwc:
        args['G_kwargs']['synthesis_kwargs']['fp16_channels_last'] = True
        args['D_kwargs']['block_kwargs']['fp16_channels_last'] = True
    if nobench:
        args['cudnn_benchmark'] = False
    if allow_tf32:
        args['allow_tf32'] = True
    if workers is not None:
        args['data_loader_kwargs']['num_workers'] = workers
        if workers == 0: # torch rejects prefetch_factor without worker processes.
            del args['data_loader_kwargs']['prefetch_factor']
    requested, cpus = args['data_loader_kwargs']['num_workers'], usable_cpus()
    args['data_loader_kwargs']['num_workers'] = capped_workers(requested, cpus)
    if workers is not None and workers > cpus:
        click.echo(f'Note: --workers={workers} capped at {cpus}, the number of CPUs this process may use.', err=True)
    if device != 'cuda':
        args['data_loader_kwargs']['pin_memory'] = False # Nothing to pin for.

#----------------------------------------------------------------------------

def resolve_device(device: str, gpus: int) -> str:
    import torch
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise _bad('--device', 'cuda requested but no CUDA GPU is visible; use --device=cpu')
        if gpus > torch.cuda.device_count():
            raise _bad('--gpus', f'{gpus} requested but only {torch.cuda.device_count()} CUDA GPUs are visible')
    return device


def setup_training_options(
    outdir      = None,     # Parent folder of the run folders (used by --resume=latest).
    gpus        = None,     # Number of processes / GPUs, a power of two. Default 1.
    snap        = None,     # Ticks between snapshots. Default 50 (10 for cfg=lowshot).
    metrics     = None,     # List of metric names. Default ['fid50k_full'] ([] for cfg=tiny).
    seed        = None,     # Random seed. Default 0.
    data        = None,     # Dataset folder or zip. Required.
    cond        = None,     # Train a conditional model (needs dataset.json labels).
    subset      = None,     # Train on the first N images of a seeded shuffle.
    mirror      = None,     # Double the data with x-flips.
    cfg         = None,     # Preset name (PRESETS). Default 'auto'.
    gamma       = None,     # Override R1 gamma.
    kimg        = None,     # Override training length (float).
    batch       = None,     # Override total batch size.
    aug         = None,     # noaug | ada | fixed | an asa_plugin spec. Default ada.
    p           = None,     # --aug=fixed probability.
    target      = None,     # --aug=ada target.
    augpipe     = None,     # AUGPIPES preset. Default bgc.
    resume      = None,     # Preset, path, URL or 'latest'.
    freezed     = None,     # Freeze-D: number of frozen D layers.
    fp32        = None,     # Disable mixed precision.
    nhwc        = None,     # channels_last for the fp16 layers.
    nobench     = None,     # Disable cuDNN benchmarking.
    allow_tf32  = None,     # Allow TF32 matmuls/convolutions.
    workers     = None,     # DataLoader workers. Default 3, at most the CPU count.
    tick        = None,     # kimg per tick (float). Default 4.
    batch_gpu   = None,     # Images per GPU per accumulation round.
    device      = 'auto',   # auto | cuda | cpu.
    nonfinite   = 'skip',   # skip | stop.
    deterministic = False,  # Deterministic algorithms (exact-resume tests).
) -> tuple:
    """Returns ``(desc, options)``; ``options['run_dir']`` is left None for the caller to fill in."""
    gpus = 1 if gpus is None else gpus
    if not _is_power_of_two(gpus):
        raise _bad('--gpus', f'{gpus} is not a power of two (1, 2, 4, 8, ...)')
    cfg = 'auto' if cfg is None else cfg
    if cfg not in PRESETS:
        raise _bad('--cfg', f'unknown preset "{cfg}"; choose one of {", ".join(PRESETS)}')
    snap = PRESETS[cfg].get('snap', 50) if snap is None else snap
    if snap < 1:
        raise _bad('--snap', 'must be at least 1')
    metrics = (['fid50k_full'] if cfg != 'tiny' else []) if metrics is None else metrics
    check_metrics(metrics)
    seed = 0 if seed is None else seed
    device = resolve_device(device, gpus)
    if data is None:
        raise _bad('--data', 'required')

    args = dict(num_gpus=gpus, image_snapshot_ticks=snap, network_snapshot_ticks=snap, metrics=list(metrics), random_seed=seed)
    desc, c_dim = dataset_options(args, data, bool(cond), subset, bool(mirror), seed)
    desc += preset_options(args, cfg, gpus, gamma, kimg, batch, batch_gpu)
    aug_desc, aug_spec = aug_options(args, aug, p, target, augpipe)
    resume_desc, resume_state = resume_options(args, resume, outdir, c_dim, aug_spec)
    desc += aug_desc + resume_desc
    if freezed is not None:
        if freezed < 0:
            raise _bad('--freezed', 'must be non-negative')
        desc += f'-freezed{freezed:d}'
        args['D_kwargs']['block_kwargs']['freeze_layers'] = freezed
    perf_options(args, fp32, nhwc, nobench, allow_tf32, workers, device)
    if tick is not None and not tick > 0:
        raise _bad('--tick', 'must be positive (kimg per tick, e.g. 0.2)')

    args['run_dir'] = None
    args['aug_spec'] = aug_spec
    args['kimg_per_tick'] = float(4 if tick is None else tick)
    args['device'] = device
    args['G_reg_interval'] = 4
    args['D_reg_interval'] = 16
    if resume_state is not None:
        args['resume_state'] = resume_state
    args['nonfinite'] = nonfinite
    args['deterministic'] = bool(deterministic)
    return desc, args

#----------------------------------------------------------------------------
# Metric names against the metrics registry.

def check_metrics(metrics: list) -> None:
    from metrics import metric_main # deferred: it pulls in the detectors
    bad = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if bad:
        raise _bad('--metrics', f'unknown metric {", ".join(bad)}; valid: {", ".join(metric_main.list_valid_metrics())} (or none)')

#----------------------------------------------------------------------------
# Run folder: next free 5-digit id in outdir (docs/compatibility.md §1.4), claimed with an exclusive mkdir
# so that an existing folder is never reused, even by a concurrent launch.

def next_run_dir(outdir: str, desc: str) -> str:
    prev = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))] if os.path.isdir(outdir) else []
    ids = [int(m.group()) for m in (re.match(r'^\d+', x) for x in prev) if m is not None]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def make_run_dir(outdir: str, desc: str) -> str:
    os.makedirs(outdir, exist_ok=True)
    for _attempt in range(100):
        run_dir = next_run_dir(outdir, desc)
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            continue
    raise click.ClickException(f'--outdir: could not claim a new run folder in {outdir}')

#----------------------------------------------------------------------------

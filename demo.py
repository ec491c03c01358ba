"""The README's demo: fine-tune a small pretrained network on 100 emoji faces with two --aug specs
and put before and after side by side in one picture (docs/demo.md).

    python demo.py --outdir=demo

The network in pretrained/ was trained by this project on the embedded emoji set without its
faces (docs/demo.md has the command); the demo fine-tunes it on 100 faces it has never seen, once
per spec, with the same seed, and writes demo/before-after.png: real faces, the pretrained network's
samples, and each fine-tuned network's samples for the same latents.
"""

from __future__ import annotations

import os

import click

import dnnlib

ROOT = os.path.dirname(os.path.abspath(__file__))
PRETRAINED = os.path.join(ROOT, 'pretrained', 'emoji32-noface-tiny.pkl')
FACES = os.path.join(ROOT, 'datasets', 'emoji32-faces100.zip')
PICTURE = 'before-after.png'

#----------------------------------------------------------------------------
# The picture: one labelled row per source, the same latents in every generated row.

def label_rows(rows: list, scale: int = 2, label_width: int = 150):
    """rows: [(label, [uint8 array [H, W, C]])] -> PIL image, images upscaled by `scale` (nearest)."""
    import numpy as np
    import PIL.Image
    import PIL.ImageDraw
    n = max(len(images) for _, images in rows)
    h, w = (side * scale for side in rows[0][1][0].shape[:2])
    canvas = PIL.Image.new('RGB', (label_width + n * w, len(rows) * h), 'white')
    draw = PIL.ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((6, r * h + h // 2 - 6), label, fill='black')
        for i, img in enumerate(images):
            tile = PIL.Image.fromarray(np.ascontiguousarray(img[:, :, :3]) if img.shape[2] >= 3 else img[:, :, 0])
            canvas.paste(tile.convert('RGB').resize((w, h), PIL.Image.NEAREST), (label_width + i * w, r * h))
    return canvas


def sample_rows(networks: list, seeds: list) -> list:
    """[(label, pkl path)] -> [(label, [uint8 [H, W, C]])]: G_ema on z = RandomState(seed), as generate.py."""
    import torch
    import generate
    rows = []
    for label, pkl in networks:
        G = generate.load_generator(pkl, torch.device('cpu'))
        c = torch.zeros([1, G.c_dim])
        with torch.inference_mode():
            images = [generate.to_uint8(G(generate.seed_to_z(s, G.z_dim, 'cpu'), c, noise_mode='const', force_fp32=True))
                      for s in seeds]
        rows.append((label, images))
    return rows


def real_row(data: str, count: int) -> list:
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path=data)
    step = max(len(dataset) // count, 1)
    return [dataset[i * step][0].transpose(1, 2, 0) for i in range(min(count, len(dataset)))]


def only_run_dir(train_outdir: str) -> str:
    runs = [n for n in sorted(os.listdir(train_outdir)) if os.path.isdir(os.path.join(train_outdir, n))]
    if len(runs) != 1:
        raise click.ClickException(f'{train_outdir}: expected one run folder, found {len(runs)}')
    return os.path.join(train_outdir, runs[-1])


def last_snapshot(run_dir: str) -> str:
    snaps = sorted(n for n in os.listdir(run_dir) if n.startswith('network-snapshot-') and n.endswith('.pkl'))
    if not snaps:
        raise click.ClickException(f'{run_dir} holds no snapshot; the training run did not finish')
    return os.path.join(run_dir, snaps[-1])


def last_tick_line(console: str):
    try:
        with open(console, 'rt', errors='replace') as f:
            ticks = [line.strip() for line in f if line.startswith('tick ')]
    except OSError:
        return None
    return ticks[-1] if ticks else None

#----------------------------------------------------------------------------
# The runs train side by side, one process each with its share of the CPU threads: on a small
# CPU that is as fast as one after the other, and every run reports its own tick line and ETA.

def train_in_parallel(commands: dict, consoles: dict, threads: int, poll: float = 5.0) -> None:
    """commands/consoles: {name: argv} / {name: log path}. Prints each run's newest tick line."""
    import subprocess
    import time
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', str(threads)))
    procs, shown = {}, {}
    try:
        for name, cmd in commands.items():
            with open(consoles[name], 'wb') as console:
                procs[name] = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, env=env)
        while any(p.poll() is None for p in procs.values()):
            time.sleep(poll)
            for name in procs:
                line = last_tick_line(consoles[name])
                if line and line != shown.get(name):
                    shown[name] = line
                    click.echo(f'[{name}] {line}')
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
    failed = [name for name, p in procs.items() if p.returncode != 0]
    if failed:
        raise click.ClickException(f'training --aug={failed[0]} failed (exit code {procs[failed[0]].returncode}); '
                                   f'its output is in {consoles[failed[0]]}')

#----------------------------------------------------------------------------

@click.command()
@click.option('--outdir', help='Folder for the runs and before-after.png', default='demo', show_default=True, metavar='DIR')
@click.option('--specs', help='--aug specs to fine-tune with, separated by ";"', default='noaug;ada+asa', show_default=True)
@click.option('--kimg', help='Fine-tuning length per spec', type=click.FloatRange(min=0, min_open=True), default=10, show_default=True)
@click.option('--network', help='Pretrained pickle to start from', default=PRETRAINED, show_default='pretrained/emoji32-noface-tiny.pkl', metavar='PKL')
@click.option('--data', help='The small dataset to fine-tune on', default=FACES, show_default='datasets/emoji32-faces100.zip', metavar='PATH')
@click.option('--seed', help='Training seed of every run', type=int, default=0, show_default=True)
@click.option('--train-args', help='Extra train.py options, e.g. "--mirror=1"', default='', metavar='STR')
def main(outdir, specs, kimg, network, data, seed, train_args):
    """Fine-tune a pretrained network on 100 emoji faces with each --aug spec; picture before and after."""
    import compare
    from training.config import usable_cpus
    specs = [s.strip() for s in specs.split(';') if s.strip()]
    for flag, path in (('--network', network), ('--data', data)):
        if not os.path.isfile(path):
            raise click.BadParameter(f'{path} is not a file', param_hint=flag)
    problem = dnnlib.util.output_folder_problem(outdir)
    if problem:
        raise click.BadParameter(f'{problem}; choose another --outdir', param_hint='--outdir')
    picture = os.path.join(outdir, PICTURE)
    if os.path.exists(picture) or any(os.path.exists(os.path.join(outdir, run_name(s))) for s in specs):
        raise click.BadParameter(f'{outdir} already holds a demo; choose a new --outdir', param_hint='--outdir')
    extra = f'--resume={network} --tick={max(kimg / 5, 0.1):g} --snap=1000 --workers=0 {train_args}'
    commands, consoles = {}, {}
    for spec in specs:
        train_outdir = os.path.join(outdir, run_name(spec))
        os.makedirs(train_outdir)
        commands[spec] = compare.train_command(spec, data, kimg, seed, 'tiny', train_outdir, extra)
        consoles[spec] = os.path.join(train_outdir, 'console.txt')
    threads = max(usable_cpus() // len(specs), 1)
    click.echo(f'Fine-tuning {os.path.relpath(network)} on {os.path.relpath(data)} for {kimg:g} kimg with --aug='
               + ' and --aug='.join(specs) + f', side by side ({threads} thread(s) each); full output in '
               + ', '.join(consoles.values()))
    train_in_parallel(commands, consoles, threads)
    click.echo('Drawing the picture...')
    run_dirs = [only_run_dir(os.path.join(outdir, run_name(s))) for s in specs]
    rows = [('100 real faces', real_row(data, 8))]
    rows += sample_rows([('before: pretrained', network)] + [(f'after: {s}', last_snapshot(d)) for s, d in zip(specs, run_dirs)],
                        seeds=list(range(8)))
    with dnnlib.util.AtomicFile(picture, 'wb') as f:
        label_rows(rows).save(f, format='PNG', optimize=True)
    click.echo(f'Wrote {picture}: ' + '; '.join(label for label, _ in rows))


def run_name(spec: str) -> str:
    return 'run-' + ''.join(c if c.isalnum() or c in '+-.' else '_' for c in spec)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # arguments come from click

#----------------------------------------------------------------------------

"""Micro-benchmark: what ASA adds to a discriminator step (forward + backward on reals and fakes).

Runs the same D step with and without ASA's hooks, interleaved so that machine noise hits both
alike, and prints the median and minimum times side by side with their ratio, plus the time of
ASA's hooks alone on fixed features (the part of the difference that is not noise). The ASA step is the Dmain path
of training/loss.py: D(..., return_features=True) -> observe_features -> adjust_logits -> softplus.

    python bench/asa.py                         # CPU, 32 px, 128 features
    python bench/asa.py --res=16 --cbase=8192 --cmax=512   # 512 features, as in full-size D
    python bench/asa.py --device=cuda --batch=64
"""

import os
import statistics
import sys
import time

import click
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from asa_plugin.asa.method import ASA            # noqa: E402
from asa_plugin.base import PluginContext        # noqa: E402
from training.networks import Discriminator     # noqa: E402

#----------------------------------------------------------------------------
# One Dmain step: real and fake passes, logistic loss, backward. asa=None is the plain step.

def d_step(D, real, fake, c, asa):
    loss = 0
    for img, target in ((real, 'real'), (fake, 'fake')):
        if asa is None:
            logits = D(img, c)
        else:
            logits, features = D(img, c, return_features=True)
            asa.observe_features(features.detach(), c, target)
            logits = asa.adjust_logits(logits, features, c, target=target, phase='Dmain')
        loss = loss + F.softplus(-logits if target == 'real' else logits).mean()
    loss.backward()


# ASA's hooks alone on fixed features (what the step adds besides the identical D passes).
def hooks_only(D, f_real, f_fake, c, asa):
    loss = 0
    for f, target in ((f_real, 'real'), (f_fake, 'fake')):
        asa.observe_features(f, c, target)
        logits = torch.zeros([f.shape[0], 1], device=f.device, requires_grad=True)
        loss = loss + asa.adjust_logits(logits, f, c, target=target, phase='Dmain').sum()
    loss.backward()


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

#----------------------------------------------------------------------------

@click.command()
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda')
@click.option('--res', default=32, show_default=True, help='Image resolution')
@click.option('--batch', default=16, show_default=True, help='Batch per step')
@click.option('--cbase', default=2048, show_default=True, help='D channel_base')
@click.option('--cmax', default=128, show_default=True, help='D channel_max (= feature dimension C; 512 in full-size configs)')
@click.option('--c-dim', 'c_dim', default=0, show_default=True, help='Label dimension, 0 = unconditional')
@click.option('--per-class', is_flag=True, help='One covariance per class (needs --c-dim)')
@click.option('--cov-mode', default='ema', show_default=True, help='running | ema | batch')
@click.option('--iters', default=10, show_default=True, help='Timed steps per variant')
@click.option('--warmup', default=3, show_default=True, help='Untimed steps per variant')
@click.option('--threads', default=1, show_default=True, help='CPU threads (1 = least sensitive to a shared machine)')
def main(device, res, batch, cbase, cmax, c_dim, per_class, cov_mode, iters, warmup, threads):
    """Time a D step with and without ASA and print the ratio."""
    device = torch.device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    D = Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=cbase, channel_max=cmax).to(device)
    ctx = PluginContext(device=device, c_dim=c_dim, img_resolution=res, img_channels=3, batch_size=batch, batch_gpu=batch, D=D)
    asa = ASA(lambda0=0.5, ramp='none', cov_mode=cov_mode, per_class=per_class)
    asa.setup(ctx)
    real = torch.randn([batch, 3, res, res], device=device)
    fake = torch.randn([batch, 3, res, res], device=device)
    c = torch.nn.functional.one_hot(torch.arange(batch, device=device) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]

    with torch.no_grad():
        f_real = D(real, c, return_features=True)[1]
        f_fake = D(fake, c, return_features=True)[1]
    variants = (('plain', lambda: d_step(D, real, fake, c, None)), ('asa', lambda: d_step(D, real, fake, c, asa)),
                ('hooks', lambda: hooks_only(D, f_real, f_fake, c, asa)))
    # On a shared CPU the process CPU time (one thread) is the robust figure; on CUDA, wall time.
    clock = time.process_time if device.type == 'cpu' else time.perf_counter
    times = {name: [] for name, _ in variants}
    for i in range(warmup + iters):
        for name, fn in variants:
            D.zero_grad(set_to_none=True)
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append(clock() - start)

    C = int(D.last_layer(c)[0].shape[1])
    print(f'device={device.type} res={res} batch={batch} C={C} c_dim={c_dim} per_class={per_class} '
          f'cov_mode={cov_mode} iters={iters} threads={threads} clock={"process CPU time" if device.type == "cpu" else "wall"}')
    print(f'{"stat":<8}{"D step, plain":>16}{"D step, ASA":>16}{"ratio":>8}{"ASA hooks alone":>18}{"hooks/plain":>13}')
    for stat, fn in (('median', statistics.median), ('min', min)):
        plain, with_asa, hooks = (fn(times[k]) * 1e3 for k in ('plain', 'asa', 'hooks'))
        print(f'{stat:<8}{plain:>13.2f} ms{with_asa:>13.2f} ms{with_asa / plain:>8.3f}{hooks:>15.3f} ms{hooks / plain:>13.4f}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------

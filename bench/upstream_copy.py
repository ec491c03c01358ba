"""Make a harness-fixed, throw-away copy of an upstream StyleGAN2-ADA checkout for speed comparisons.

    python bench/upstream_copy.py --upstream ~/stylegan2-ada-pytorch --dest /tmp/sg2ada-fixed

Copies the checkout (without .git) to --dest, which must not exist yet and must lie outside this
repository, then fixes exactly the two things that stop upstream from running at its real speed on
torch >= 2.11 (the first edits of patches/compat.py, see patches/README.md):
  1. `misc.InfiniteSampler` calls `super().__init__(dataset)`, a TypeError on torch >= 2.11;
  2. the plugin loader imports the built extension by name, which recent torch does not register,
     so upstream silently falls back to its slow reference ops; it now keeps the module that
     `torch.utils.cpp_extension.load` returns.
Nothing else changes; the changed lines are printed. Upstream code is never copied into this repository.
"""

import importlib.util
import os
import shutil
import sys

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _load(name):
    # patches/ is no package: load its modules from their files.
    spec = importlib.util.spec_from_file_location(f'upstream_copy_{name}', os.path.join(REPO, 'patches', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def harness_edits():
    r"""The two fixes as patches/compat.py edits: the sampler line and the plugin loader's lines."""
    compat = _load('compat')
    return [compat._SAMPLER, *compat._plugin_loader('build_dir')]  # pylint: disable=protected-access

def make_fixed_copy(upstream, dest):
    r"""Copy `upstream` to `dest` and apply the harness fixes; returns one line per changed line."""
    upstream, dest = os.path.abspath(upstream), os.path.abspath(dest)
    if not os.path.isfile(os.path.join(upstream, 'train.py')) or not os.path.isdir(os.path.join(upstream, 'torch_utils')):
        raise click.ClickException(f'--upstream={upstream}: not a StyleGAN2-ADA checkout (no train.py and torch_utils/)')
    if os.path.exists(dest):
        raise click.ClickException(f'--dest={dest} exists; give a new folder (nothing is overwritten)')
    if os.path.commonpath([dest, REPO]) == REPO:
        raise click.ClickException(f'--dest={dest} is inside this repository; use a folder outside it, e.g. /tmp')
    apply = _load('apply')
    shutil.copytree(upstream, dest, ignore=shutil.ignore_patterns('.git'))
    changed = []
    for edit in harness_edits():
        path = os.path.join(dest, edit.rel)
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new = apply.replace_line(text, edit.original, edit.new)
        if new is None:
            changed.append(f'not needed (line absent): {edit!r}')
            continue
        with open(path, 'w', encoding='utf-8') as f:
            f.write(new)
        changed.append(f'fixed: {edit!r}')
    return changed

@click.command()
@click.option('--upstream', required=True, help='Pristine StyleGAN2-ADA checkout (read only)')
@click.option('--dest', required=True, help='New folder outside this repository for the fixed copy')
def main(upstream, dest):
    """Copy an upstream checkout and fix its two torch >= 2.11 harness problems."""
    for line in make_fixed_copy(upstream, dest):
        print(line)
    print(f'fixed copy: {os.path.abspath(dest)}')

if __name__ == '__main__':
    sys.exit(main())  # pylint: disable=no-value-for-parameter

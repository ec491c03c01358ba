"""The smallest edits that let an NVlabs StyleGAN2-ADA or StyleGAN3 checkout run on today's
PyTorch, Python and SciPy. apply.py makes them by default (``--no-compat`` skips them) and
``--revert`` undoes them byte for byte: each replaced line is kept inside its marked block,
behind ``#|``, and put back on revert.

An edit whose original line is not in the file (a fork that fixed it already, an older or newer
upstream) is skipped and reported as not needed; it never stops the patch.
"""

from __future__ import annotations

#----------------------------------------------------------------------------
# One edit: in file `rel`, the line `original` (matched whole, once) becomes `new` (a list of
# lines without indentation; the original's indentation is added). `why` is printed.

class Edit:
    def __init__(self, rel: str, original: str, new: list, why: str):
        self.rel, self.original, self.new, self.why = rel, original, new, why

    def __repr__(self):
        return f'{self.rel}: {self.why}'

#----------------------------------------------------------------------------
# torch >= 2.11: Sampler.__init__ is object.__init__, so passing the dataset raises TypeError.
# On every torch version Sampler.__init__ does nothing useful, so the call is simply dropped.

_SAMPLER = Edit('torch_utils/misc.py', '        super().__init__(dataset)', [],
                'InfiniteSampler: drop super().__init__(dataset) (TypeError on torch >= 2.11)')

#----------------------------------------------------------------------------
# Recent torch no longer registers the built extension in sys.modules, so importing it by name
# fails ("No module named 'bias_act_plugin'") and upstream falls back to its slow reference ops.
# cpp_extension.load has always returned the module: keep that instead.

def _plugin_loader(build_dir_name: str) -> list:
    load = 'torch.utils.cpp_extension.load(name=module_name, '
    return [
        Edit('torch_utils/custom_ops.py', f'            {load}build_directory={build_dir_name},',
             [f'module = {load}build_directory={build_dir_name},'],
             'plugin loader: keep the module cpp_extension.load returns (cached build)'),
        Edit('torch_utils/custom_ops.py', f'            {load}verbose=verbose_build, sources=sources, **build_kwargs)',
             [f'module = {load}verbose=verbose_build, sources=sources, **build_kwargs)'],
             'plugin loader: keep the module cpp_extension.load returns'),
        Edit('torch_utils/custom_ops.py', '        module = importlib.import_module(module_name)', [],
             "plugin loader: no import by name (fails on torch >= 2.x: 'No module named ..._plugin')"),
    ]

#----------------------------------------------------------------------------
# Python 3.12 removed distutils; upstream only needs strtobool from it.

_STRTOBOOL = Edit('dnnlib/util.py', 'from distutils.util import strtobool', [
    'def strtobool(val):  # distutils was removed in Python 3.12',
    "    words = {'y': 1, 'yes': 1, 't': 1, 'true': 1, 'on': 1, '1': 1, 'n': 0, 'no': 0, 'f': 0, 'false': 0, 'off': 0, '0': 0}",
    '    if val.lower() not in words:',
    "        raise ValueError(f'invalid truth value {val!r}')",
    '    return words[val.lower()]',
], 'dnnlib: strtobool without distutils (removed in Python 3.12)')

#----------------------------------------------------------------------------
# SciPy deprecated sqrtm's `disp` (removed in 1.18). Without it sqrtm returns the matrix alone,
# on old and new SciPy alike.

_SQRTM = Edit('metrics/frechet_inception_distance.py',
              '    s, _ = scipy.linalg.sqrtm(np.dot(sigma_gen, sigma_real), disp=False) # pylint: disable=no-member',
              ['s = scipy.linalg.sqrtm(np.dot(sigma_gen, sigma_real)) # pylint: disable=no-member'],
              'FID: scipy.linalg.sqrtm without disp (deprecated, removed in SciPy 1.18)')

#----------------------------------------------------------------------------
# StyleGAN3 imports pkg_resources (gone from setuptools >= 81) for one version comparison.

def _parse_version(rel: str) -> Edit:
    return Edit(rel, 'from pkg_resources import parse_version', [
        'def parse_version(text):  # pkg_resources is gone from recent setuptools',
        "    return tuple(int(part) for part in __import__('re').findall(r'\\d+', text)[:2])",
    ], 'parse_version without pkg_resources (removed from setuptools >= 81)')

#----------------------------------------------------------------------------

EDITS = {
    'stylegan2-ada': [_SAMPLER, *_plugin_loader('build_dir'), _STRTOBOOL, _SQRTM],
    'stylegan3': [_SAMPLER, *_plugin_loader('cached_build_dir'), _STRTOBOOL, _SQRTM,
                  _parse_version('torch_utils/ops/conv2d_gradfix.py'),
                  _parse_version('torch_utils/ops/grid_sample_gradfix.py')],
}

#----------------------------------------------------------------------------

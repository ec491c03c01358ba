"""patches/compat.py: the edits that let an NVlabs checkout run on today's PyTorch/Python/SciPy.

Synthetic skeletons (written here, not upstream code) carry the exact lines the edits replace;
each is run before and after patching in a subprocess. Real checkouts are used when
STYLEGAN2_ADA_DIR / STYLEGAN3_DIR point to them (copied first; never modified)."""

import os
import shutil
import subprocess
import sys

import pytest

from test_patches import SG2_TRAIN, SG3_TRAIN, make_checkout, patch_apply, snapshot

#----------------------------------------------------------------------------

def _custom_ops(build_dir: str) -> str:
    return f'''\
import importlib
import torch.utils.cpp_extension
def get_plugin(module_name, sources, cached=False, **build_kwargs):
    verbose_build, {build_dir} = False, 'build'
    if True:
        if cached:
            torch.utils.cpp_extension.load(name=module_name, build_directory={build_dir},
                verbose=verbose_build, sources=sources, **build_kwargs)
        else:
            torch.utils.cpp_extension.load(name=module_name, verbose=verbose_build, sources=sources, **build_kwargs)
        module = importlib.import_module(module_name)
    return module
'''

MISC = '''\
import torch
class InfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, rank=0):
        assert len(dataset) > 0
        super().__init__(dataset)
        self.dataset = dataset
'''

UTIL = 'import os\nfrom distutils.util import strtobool\ndef ask(text):\n    return strtobool(text)\n'

FID = '''\
import numpy as np
import scipy.linalg
def fid_sqrt(sigma_gen, sigma_real):
    s, _ = scipy.linalg.sqrtm(np.dot(sigma_gen, sigma_real), disp=False) # pylint: disable=no-member
    return s
'''

GRADFIX = 'import torch\nfrom pkg_resources import parse_version\nnew_api = parse_version(torch.__version__) >= parse_version("1.11.0a")\n'

def compat_checkout(root, flavour):
    root = make_checkout(root, SG2_TRAIN if flavour == 'sg2' else SG3_TRAIN)
    files = {'torch_utils/custom_ops.py': _custom_ops('build_dir' if flavour == 'sg2' else 'cached_build_dir'),
             'torch_utils/misc.py': MISC, 'dnnlib/__init__.py': '', 'dnnlib/util.py': UTIL,
             'metrics/__init__.py': '', 'metrics/frechet_inception_distance.py': FID}
    if flavour == 'sg3':
        files.update({'torch_utils/ops/conv2d_gradfix.py': GRADFIX, 'torch_utils/ops/grid_sample_gradfix.py': GRADFIX})
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root

# Runs in the checkout: every patched code path, with cpp_extension.load replaced by a stub that
# returns a module object without registering it (as recent torch does).
PROBE = '''
import sys, types, importlib, numpy as np, torch.utils.cpp_extension
built = types.ModuleType('demo_plugin')
torch.utils.cpp_extension.load = lambda **kwargs: built
from torch_utils import misc, custom_ops
misc.InfiniteSampler(list(range(3)))
assert custom_ops.get_plugin('demo_plugin', ['x.cu']) is built
assert custom_ops.get_plugin('demo_plugin', ['x.cu'], cached=True) is built
from dnnlib.util import ask
assert ask('Yes') == 1 and ask('off') == 0
from metrics.frechet_inception_distance import fid_sqrt
assert np.allclose(fid_sqrt(np.eye(2) * 4, np.eye(2)), np.eye(2) * 2)
if sys.argv[1] == 'sg3':
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    assert conv2d_gradfix.new_api and grid_sample_gradfix.new_api
print('ok')
'''

def _probe(root, flavour):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONWARNINGS'] = 'error::DeprecationWarning:metrics.frechet_inception_distance'
    return subprocess.run([sys.executable, '-c', PROBE, flavour], cwd=root, env=env, capture_output=True, text=True, timeout=120)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('flavour', ['sg2', 'sg3'])
def test_compat_edits_fix_each_failure_and_revert_exactly(tmp_path, flavour, capsys):
    root = compat_checkout(tmp_path / 'up', flavour)
    before = snapshot(root)
    failed = _probe(root, flavour)
    assert failed.returncode != 0 and 'object.__init__() takes exactly one argument' in failed.stderr

    assert patch_apply.main(['--upstream', str(root)]) == 0
    out = capsys.readouterr().out
    assert 'InfiniteSampler' in out and 'plugin loader' in out and 'not needed' not in out
    probe = _probe(root, flavour)
    assert probe.returncode == 0, probe.stderr[-3000:]
    once = snapshot(root)
    assert patch_apply.main(['--upstream', str(root)]) == 0
    assert snapshot(root) == once                                   # idempotent
    assert patch_apply.main(['--upstream', str(root), '--revert']) == 0
    assert snapshot(root) == before                                 # byte-exact revert


def test_compat_edits_optional_and_skipped_when_not_needed(tmp_path, capsys):
    root = compat_checkout(tmp_path / 'up', 'sg2')
    before = snapshot(root)
    assert patch_apply.main(['--upstream', str(root), '--no-compat']) == 0
    after = snapshot(root)
    hooks = ('train.py', 'training/training_loop.py')     # the patch's own blocks, not compatibility edits
    assert all(after[rel] == before[rel] for rel in before if rel not in hooks)
    assert patch_apply.main(['--upstream', str(root), '--revert']) == 0
    (root / 'torch_utils/misc.py').write_text(MISC.replace('super().__init__(dataset)', 'super().__init__()'))
    capsys.readouterr()
    assert patch_apply.main(['--upstream', str(root)]) == 0
    assert 'not needed: torch_utils/misc.py' in capsys.readouterr().out
    assert patch_apply.replace_line('a\nb\n', 'x', ['y']) is None
    kept = patch_apply.replace_line('a\r\n  b\r\n', '  b', ['c'])
    assert '  c\r\n' in kept and patch_apply.strip_blocks(kept) == 'a\r\n  b\r\n'

#----------------------------------------------------------------------------
# The real upstream sources, where a checkout is available locally (not in CI).

@pytest.mark.slow
@pytest.mark.parametrize('env_var', ['STYLEGAN2_ADA_DIR', 'STYLEGAN3_DIR'])
def test_compat_on_real_checkout(tmp_path, env_var):
    src = os.environ.get(env_var)
    if not src or not os.path.isfile(os.path.join(src, 'train.py')):
        pytest.skip(f'{env_var} does not point to an upstream checkout')
    root = tmp_path / 'up'
    shutil.copytree(src, root, ignore=shutil.ignore_patterns('.git', '__pycache__'))
    before = snapshot(root)
    assert patch_apply.main(['--upstream', str(root)]) == 0
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    probe = subprocess.run([sys.executable, '-c', 'from torch_utils import misc; import dnnlib.util, torch_utils.ops.conv2d_gradfix; '
                            'print(next(iter(misc.InfiniteSampler(list(range(3))))))'],
                           cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert patch_apply.main(['--upstream', str(root), '--revert']) == 0
    assert snapshot(root) == before

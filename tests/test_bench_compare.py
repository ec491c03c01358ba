"""The upstream-comparison helpers of bench/gpu_check.sh: the harness-fixed upstream copy changes
exactly the two lines it names, and the training summary pairs ours with upstream's rows."""

import json
import os
import sys

import click
import pytest

from test_patches import snapshot
from test_patches_compat import compat_checkout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import train_summary                      # noqa: E402
from bench.upstream_copy import make_fixed_copy      # noqa: E402

#----------------------------------------------------------------------------

def test_fixed_copy_changes_only_the_sampler_and_plugin_loader_lines(tmp_path):
    src = compat_checkout(tmp_path / 'up', 'sg2')
    before = snapshot(src)
    report = make_fixed_copy(str(src), str(tmp_path / 'fixed'))
    assert snapshot(src) == before                                   # the pristine checkout is only read
    after = snapshot(tmp_path / 'fixed')
    changed = sorted(rel for rel in before if before[rel] != after[rel])
    assert changed == ['torch_utils/custom_ops.py', 'torch_utils/misc.py'] and sorted(after) == sorted(before)
    misc = after['torch_utils/misc.py'].decode()
    assert '#|        super().__init__(dataset)' in misc and '\n        super().__init__(dataset)' not in misc
    ops = after['torch_utils/custom_ops.py'].decode()
    assert ops.count('module = torch.utils.cpp_extension.load(') == 2 and '#|        module = importlib.import_module' in ops
    assert len(report) == 4 and all(line.startswith('fixed: ') for line in report)

def test_fixed_copy_refuses_existing_inside_repo_and_non_checkout_folders(tmp_path):
    src = compat_checkout(tmp_path / 'up', 'sg2')
    (tmp_path / 'taken').mkdir()
    for dest, message in [(tmp_path / 'taken', 'exists'), (os.path.join(ROOT, 'upstream-copy'), 'inside this repository')]:
        with pytest.raises(click.ClickException, match=message):
            make_fixed_copy(str(src), str(dest))
    with pytest.raises(click.ClickException, match='not a StyleGAN2-ADA checkout'):
        make_fixed_copy(str(tmp_path), str(tmp_path / 'new'))
    assert not os.path.exists(os.path.join(ROOT, 'upstream-copy'))

#----------------------------------------------------------------------------

def _row(side, aug, sec, **extra):
    row = dict(cfg='paper256', res=256, aug=aug, sec_per_kimg=sec, cpu_sec_per_kimg=sec / 2, peak_gpu_mem_gb=3.0, **extra)
    if side == 'upstream':
        row.update(side='upstream', plugins='cuda')
    return json.dumps(row)

def test_train_summary_pairs_sides_and_relates_each_aug_to_its_noaug(tmp_path, capsys):
    ours = tmp_path / 'train-ours-256.txt'
    ours.write_text('tick 0 ...\n' + '\n'.join([_row('ours', 'noaug', 10.0), _row('ours', 'ada:bgc,target=0.6', 12.0),
                                                _row('ours', 'ada:bgc,target=0.6+asa', 12.5)]) + '\n{"broken": \n')
    theirs = tmp_path / 'train-upstream-256.txt'
    theirs.write_text('\n'.join([_row('upstream', 'noaug', 20.0), _row('upstream', 'ada', 30.0)]) + '\n')
    assert train_summary.main([str(ours), str(theirs)]) == 0
    out = capsys.readouterr().out
    # Ours reports the normalized spec, upstream the plain name: rows pair on the method names.
    assert '| paper256 | 256 | `ada` | 12.00 | 30.00 | 0.40 | 6.00 | 15.00 | 1.20 | 1.50 | 3.00 | 3.00 |' in out
    assert '| paper256 | 256 | `ada+asa` | 12.50 | - | - |' in out
    assert 'upstream ops: paper256/ada: cuda' in out

#----------------------------------------------------------------------------

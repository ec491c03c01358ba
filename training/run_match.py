"""Which earlier run `--resume=latest` continues: the newest one trained on the same dataset with the
same options (docs/crash-safety.md, "How to resume").

A run's options are read from its training_options.json (plain JSON, never a pickle) and compared
with the new run's on what changes the result: the dataset, the augmentation, the batch size, the
networks' architecture and the R1 weight. Device, workers, precision and snapshot intervals may
differ freely.
"""

from __future__ import annotations

import json
import os

# Keys of G_kwargs/D_kwargs that are numerics or bookkeeping, not architecture.
_NOT_ARCH = {'class_name', 'num_fp16_res', 'conv_clamp', 'fp16_channels_last', 'freeze_layers'}


def _arch(kwargs) -> object:
    if isinstance(kwargs, dict):
        out = {k: _arch(v) for k, v in kwargs.items() if k not in _NOT_ARCH}
        return {k: v for k, v in out.items() if v != {}}
    return list(kwargs) if isinstance(kwargs, tuple) else kwargs


def _dataset(options: dict) -> dict:
    ts = options.get('training_set_kwargs') or {}
    path = ts.get('path')
    return dict(path=os.path.realpath(os.path.expanduser(path)) if isinstance(path, str) else path,
                use_labels=bool(ts.get('use_labels')), xflip=bool(ts.get('xflip')), max_size=ts.get('max_size'))


def _with_defaults(G_kwargs, D_kwargs) -> tuple:
    # A resumed run records the architecture it adopted from its pickle explicitly; spell out the
    # constructor defaults so that an explicit default equals an omitted one.
    G = dict(G_kwargs or {})
    G['synthesis_kwargs'] = {'architecture': 'skip', **(G.get('synthesis_kwargs') or {})}
    return G, {'architecture': 'resnet', **(D_kwargs or {})}


def _compared(options: dict) -> dict:
    G, D = _with_defaults(options.get('G_kwargs'), options.get('D_kwargs'))
    return dict(dataset=_dataset(options), aug=options.get('aug_spec'), batch=options.get('batch_size'),
                G=_arch(G), D=_arch(D),
                gamma=(options.get('loss_kwargs') or {}).get('r1_gamma'))


def differences(stored: dict, current: dict) -> list:
    """Names of what differs between two runs' options, e.g. ['aug: noaug != ada+asa']."""
    a, b = _compared(stored), _compared(current)
    out = []
    for key in a:
        if a[key] != b[key]:
            detail = f'{a[key]} != {b[key]}' if key in ('aug', 'batch', 'gamma') else 'differs'
            if key == 'dataset' and a[key]['path'] != b[key]['path']:
                detail = f'{a[key]["path"]} != {b[key]["path"]}'
            out.append(f'{key}: {detail}')
    return out


def run_differences(run_dir: str, current: dict) -> list:
    try:
        with open(os.path.join(run_dir, 'training_options.json'), 'r', encoding='utf-8') as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return ['no readable training_options.json']
    if not isinstance(stored, dict):
        return ['training_options.json is not an object']
    return differences(stored, current)


def select_runs(runs: list, current: dict, note) -> list:
    """The runs (newest first) to take --resume=latest from; refuses when the choice is ambiguous."""
    from training.checkpoint import CheckpointNotFoundError
    diffs = [run_differences(run_dir, current) for run_dir, _ in runs]
    label = lambda i: f'{os.path.basename(runs[i][0])} ({"; ".join(diffs[i])})'
    first = next((i for i, d in enumerate(diffs) if not d), None)
    if first is not None:
        newer = [label(i) for i in range(first)]
        note(f'--resume=latest: continuing {runs[first][0]}, the newest run with the same dataset and options'
             + (f'; skipped newer runs: {", ".join(newer)}' if newer else ''))
        return [run for run, d in zip(runs, diffs) if not d]
    if len(runs) == 1:
        note(f'--resume=latest: continuing {runs[0][0]}, the only earlier run, although its options differ: {"; ".join(diffs[0])}')
        return runs
    raise CheckpointNotFoundError(f'--resume=latest: none of the {len(runs)} runs with snapshots matches this run\'s dataset and options '
                                  f'({", ".join(label(i) for i in range(min(3, len(runs))))}{", ..." if len(runs) > 3 else ""}); '
                                  f'pass the same options, or --resume=<path of a .pkl> to choose one.')

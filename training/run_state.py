"""What a run is made of on disk: the snapshot pickle's dict, the exact-resume training state,
and the RNG states, plus copying resumed weights by name with loud warnings on any mismatch.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch

from training import distributed

#----------------------------------------------------------------------------
# RNG states of this process as tensors and lists only (loadable with weights_only=True).

def capture_rng(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        'python': _to_lists(random.getstate()),
    }
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state['python']))
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def _to_lists(obj):
    return [_to_lists(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def _to_tuples(obj):
    return tuple(_to_tuples(x) for x in obj) if isinstance(obj, (tuple, list)) else obj

#----------------------------------------------------------------------------
# The snapshot dict (docs/compatibility.md §2.2 key order, plus our `asa_plugin` entry): CPU copies in eval
# mode without gradients, so that upstream's loader and tools read it unchanged.

def snapshot_data(G, D, G_ema, augment, training_set_kwargs: dict) -> dict:
    def frozen(module):
        if module is None:
            return None
        return copy.deepcopy(module).eval().requires_grad_(False).cpu()
    data = dict(training_set_kwargs=dict(training_set_kwargs))
    data['G'], data['D'], data['G_ema'] = frozen(G), frozen(D), frozen(G_ema)
    data['augment_pipe'] = frozen(augment.upstream_augment_pipe())
    data['asa_plugin'] = {'spec': augment.spec, 'state': augment.plugin_state()}
    return data

#----------------------------------------------------------------------------
# Everything else exact resume needs. RNG states come from every rank (gathered to rank 0).

def training_state(progress: dict, phases: list, loss, augment, guard, rng: dict) -> dict:
    rng_all = _gather_objects(rng)
    return {
        'format': 1,
        'progress': dict(progress),   # cur_nimg, cur_tick, batch_idx, tick_start_nimg, ema_rampup
        'optimizers': {phase.opt_name: phase.opt.state_dict() for phase in phases if phase.owns_opt},
        'loss': loss.state_dict(),   # rank 0's (upstream-style readers); per-rank copies below
        'loss_per_rank': _gather_objects(loss.state_dict()),  # pl_mean follows each rank's own batches
        'nonfinite': guard.state_dict(),
        'rng': rng_all,               # one entry per rank
        # The augmentation's one state path: plugin_state() covers its modules too (CBAM, DAG heads,
        # ADA's p); per rank because random streams differ. The snapshot holds rank 0's for pickle-only resumes.
        'plugin_states': _gather_objects(to_weights_only(augment.plugin_state())),
    }


def restore_training_state(state: dict, phases: list, loss, augment, guard, device, rank: int) -> dict:
    for phase in phases:
        if phase.owns_opt:
            # Moments and step counts come from the state; lr/betas/eps stay those of the options.
            hyper = [{k: v for k, v in group.items() if k != 'params'} for group in phase.opt.param_groups]
            phase.opt.load_state_dict(state['optimizers'][phase.opt_name])
            for group, saved in zip(phase.opt.param_groups, hyper):
                group.update(saved)
    loss_per_rank = state.get('loss_per_rank', [])
    loss.load_state_dict(loss_per_rank[rank] if len(loss_per_rank) == distributed.get_world_size() else state['loss'])
    guard.load_state_dict(state['nonfinite'])
    plugin_states = state.get('plugin_states', [])
    if len(plugin_states) == distributed.get_world_size():
        augment.load_plugin_state(from_weights_only(plugin_states[rank]))  # Each rank's own streams.
    rng = state['rng']
    if len(rng) != distributed.get_world_size():
        print(f'WARNING: the training state was saved with {len(rng)} processes, now {distributed.get_world_size()}; '
              f'the random streams of the extra ranks are reseeded, so the resume is not bit-exact.')
    if rank < len(rng):
        restore_rng(rng[rank], device)
    return dict(state['progress'])


# Plugin state may hold numpy arrays, which torch.load(weights_only=True) refuses: store them as
# tagged byte tensors and turn them back on load.
def to_weights_only(obj):
    if isinstance(obj, np.ndarray):
        return {'__ndarray__': torch.frombuffer(bytearray(obj.tobytes()), dtype=torch.uint8) if obj.nbytes else torch.zeros([0], dtype=torch.uint8),
                'dtype': obj.dtype.str, 'shape': list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {key: to_weights_only(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_weights_only(value) for value in obj)
    return obj


def from_weights_only(obj):
    if isinstance(obj, dict) and '__ndarray__' in obj:
        return np.frombuffer(obj['__ndarray__'].numpy().tobytes(), dtype=np.dtype(obj['dtype'])).reshape(obj['shape']).copy()
    if isinstance(obj, dict):
        return {key: from_weights_only(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_weights_only(value) for value in obj)
    return obj


def _gather_objects(obj) -> list:
    if not distributed.is_distributed():
        return [obj]
    gathered = [None] * distributed.get_world_size()
    distributed._collective('gather of RNG states', torch.distributed.all_gather_object, gathered, obj)
    return gathered

#----------------------------------------------------------------------------
# Copies resumed tensors by name. Unlike upstream, every missing, unexpected or mis-shaped
# tensor is listed in a loud warning instead of being skipped in silence (docs/compatibility.md §9).

def copy_by_name(src: torch.nn.Module, dst: torch.nn.Module, label: str) -> list:
    src_tensors = dict(list(src.named_parameters()) + list(src.named_buffers()))
    dst_tensors = dict(list(dst.named_parameters()) + list(dst.named_buffers()))
    problems = []
    for name, tensor in dst_tensors.items():
        if name not in src_tensors:
            problems.append(f'{label}.{name}: not in the resume pickle (kept at its initial value)')
        elif src_tensors[name].shape != tensor.shape:
            problems.append(f'{label}.{name}: shape {list(src_tensors[name].shape)} in the pickle vs {list(tensor.shape)} here (kept at its initial value)')
        else:
            with torch.no_grad():
                tensor.copy_(src_tensors[name].detach())
    problems += [f'{label}.{name}: in the pickle but not in this network (ignored)' for name in src_tensors if name not in dst_tensors]
    return problems


def warn_mismatch(problems: list, resume_pkl: str) -> None:
    if not problems:
        return
    bar = '!' * 78
    shown = '\n'.join(f'  {p}' for p in problems[:40])
    more = f'\n  ... and {len(problems) - 40} more' if len(problems) > 40 else ''
    print(f'{bar}\nWARNING: {resume_pkl} does not match the networks built from the options ({len(problems)} tensors):\n'
          f'{shown}{more}\nThe network is only partly resumed. Use the same --cfg and settings as the run that wrote '
          f'the pickle (or take the architecture from it) if this is not intended.\n{bar}')

#----------------------------------------------------------------------------

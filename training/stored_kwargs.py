"""Type and range checks on network constructor arguments read from a pickle (docs/crash-safety.md).

A pickle records `_init_kwargs` for G, D and the augmentation pipe, and the loader rebuilds our
classes from them. The file is untrusted, so every value is checked before any network is built:
a hostile `img_resolution=3` or `w_dim=2**20` must be a clear error, not an AssertionError deep in a
constructor or a multi-gigabyte allocation. `check(kwargs, where)` raises ValueError naming the key.
"""

from __future__ import annotations

import math

_MAX_DIM = 4096             # z_dim, w_dim, channels, feature counts: upstream uses at most 512.
_MAX_DEPTH = 4              # Nesting of kwargs dicts (G -> synthesis_kwargs -> ... is 2).
_MAX_ITEMS = 64             # Keys per dict, items per list.
_ARCHITECTURES = ('orig', 'skip', 'resnet')


def _int_in(lo: int, hi: int, none_ok: bool = False):
    def rule(v):
        if v is None and none_ok:
            return None
        if type(v) is not int or not lo <= v <= hi:
            return f'an integer in {lo}..{hi}' + (' or None' if none_ok else '')
        return None
    return rule


def _real_in(lo: float, hi: float, none_ok: bool = False):
    def rule(v):
        if v is None and none_ok:
            return None
        if type(v) not in (int, float) or not (math.isfinite(v) and lo <= v <= hi):
            return f'a finite number in [{lo:g}, {hi:g}]' + (' or None' if none_ok else '')
        return None
    return rule


def _resolution(v):
    if type(v) is not int or not 4 <= v <= 8192 or v & (v - 1):
        return 'a power of two in 4..8192'
    return None


def _one_of(*choices):
    return lambda v: None if v in choices and type(v) is str else f'one of {", ".join(choices)}'


def _activation(v):
    from torch_utils.ops import bias_act # pylint: disable=import-outside-toplevel
    return _one_of(*bias_act.activation_funcs)(v)


def _filter_taps(v):
    if type(v) not in (list, tuple) or not 1 <= len(v) <= 16 or not all(type(x) in (int, float) and math.isfinite(x) for x in v):
        return 'a list of 1..16 finite numbers'
    return None


def _bool(v):
    return None if type(v) is bool or v in (0, 1) and type(v) is int else 'true or false'

# Rules by key name, wherever the key appears in the tree (names are unique across our constructors).
_RULES = dict(
    z_dim=_int_in(0, _MAX_DIM), c_dim=_int_in(0, 1 << 16), w_dim=_int_in(1, _MAX_DIM),
    img_resolution=_resolution, img_channels=_int_in(1, 16),
    num_layers=_int_in(0, 64), embed_features=_int_in(0, _MAX_DIM, none_ok=True),
    layer_features=_int_in(1, _MAX_DIM, none_ok=True), cmap_dim=_int_in(0, _MAX_DIM, none_ok=True),
    channel_base=_int_in(1, 1 << 24), channel_max=_int_in(1, _MAX_DIM), num_fp16_res=_int_in(0, 16),
    conv_clamp=_real_in(1e-6, 1e9, none_ok=True), architecture=_one_of(*_ARCHITECTURES), activation=_activation,
    resample_filter=_filter_taps, imgfilter_bands=_filter_taps, lr_multiplier=_real_in(1e-8, 1e3),
    w_avg_beta=_real_in(0, 1, none_ok=True), mbstd_group_size=_int_in(1, 1024, none_ok=True),
    mbstd_num_channels=_int_in(0, 64), freeze_layers=_int_in(0, 64),
    use_noise=_bool, fp16_channels_last=_bool,
)


def _plain(value, where: str, depth: int) -> None:
    # Any other value: plain data only (no objects from the file), bounded in size.
    if value is None or type(value) in (bool, str) and len(str(value)) <= 256:
        return
    if type(value) is int and abs(value) <= 1 << 31 or type(value) is float and math.isfinite(value):
        return
    if type(value) in (list, tuple) and len(value) <= _MAX_ITEMS:
        for i, item in enumerate(value):
            _plain(item, f'{where}[{i}]', depth)
        return
    if isinstance(value, dict):
        check(value, where, depth + 1)
        return
    raise ValueError(f'{where} is {type(value).__name__} {str(value)[:40]!r}; expected plain numbers, strings or lists')


def check(kwargs, where: str = 'kwargs', depth: int = 0) -> None:
    """Raise ValueError naming the first stored constructor argument of the wrong type or range."""
    if not isinstance(kwargs, dict) or depth > _MAX_DEPTH or len(kwargs) > _MAX_ITEMS:
        raise ValueError(f'{where} is not a small dict of constructor arguments')
    for key, value in kwargs.items():
        if type(key) is not str:
            raise ValueError(f'{where} has a key of type {type(key).__name__}')
        rule = _RULES.get(key)
        expected = rule(value) if rule is not None else None
        if expected is not None:
            raise ValueError(f'{where}.{key} is {str(value)[:40]!r}; expected {expected}')
        if rule is None:
            _plain(value, f'{where}.{key}', depth)


def check_args(args, where: str = 'args') -> None:
    """Positional constructor arguments (inner layers take some): a short sequence of plain values."""
    if args is None:
        return
    if type(args) not in (tuple, list) or len(args) > 16:
        raise ValueError(f'{where} are not a short list')
    _plain(list(args), where, 0)

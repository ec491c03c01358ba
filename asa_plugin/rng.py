"""Per-method random numbers: a seedable ``torch.Generator`` per device, owned by one method.

Methods draw their per-sample decisions from their own generator instead of torch's global
RNG, so that adding a method to a stack never shifts the random stream of another one, and a
method's stream can be saved in its plugin state and restored exactly on resume.
"""

from __future__ import annotations

from typing import Optional

import torch

#----------------------------------------------------------------------------
# Odd 62-bit constant used to give every rank its own stream from one seed.

_RANK_STRIDE = 0x2545F4914F6CDD1D & ((1 << 62) - 1)

def _device_key(device) -> str:
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return str(device)

#----------------------------------------------------------------------------
# One seed, one lazily created generator per device; picklable (generators are not).

class MethodRandom:
    def __init__(self, seed: Optional[int] = None):     # None = draw a seed from torch's global RNG.
        if seed is None:
            seed = int(torch.randint(0, 1 << 62, [], dtype=torch.int64))
        self.base_seed = int(seed)
        self.seed = self.base_seed
        self.rank = 0
        self._gens = {}         # device key -> torch.Generator
        self._pending = {}      # device key -> saved state, applied when the generator is created

    def fold_in_rank(self, rank: int) -> None:
        """Give rank r its own stream (idempotent); call in setup(), before the first draw."""
        self.rank = int(rank)
        seed = (self.base_seed + self.rank * _RANK_STRIDE) % (1 << 62)
        if seed != self.seed:
            self.seed = seed
            self._gens.clear()

    def generator(self, device) -> torch.Generator:
        key = _device_key(device)
        gen = self._gens.get(key)
        if gen is None:
            gen = torch.Generator(device=key)
            gen.manual_seed(self.seed)
            if key in self._pending:
                gen.set_state(self._pending.pop(key))
            self._gens[key] = gen
        return gen

    def state_dict(self) -> dict:
        states = dict(self._pending)
        states.update({key: gen.get_state().clone() for key, gen in self._gens.items()})
        return {'seed': self.seed, 'base_seed': self.base_seed, 'rank': self.rank, 'states': states}

    def load_state_dict(self, state: dict) -> None:
        """Restore the saved stream; a state saved by another rank (snapshots hold rank 0's) gives
        this rank a new stream derived from it instead, so ranks never share one."""
        states = {key: torch.as_tensor(value, dtype=torch.uint8).cpu().clone()
                  for key, value in state.get('states', {}).items()}
        self.base_seed = int(state.get('base_seed', state['seed']))
        self._gens.clear()
        if int(state.get('rank', 0)) == self.rank:
            self.seed, self._pending = int(state['seed']), states
            return
        mix = sum(int(v.to(torch.int64).sum()) for v in states.values())
        self.seed = (self.base_seed + self.rank * _RANK_STRIDE + mix * 0x9E3779B97F4A7C15) % (1 << 62)
        self._pending = {}

    def __getstate__(self):
        return self.state_dict()

    def __setstate__(self, state):
        self._gens = {}
        self._pending = {}
        self.rank = int(state.get('rank', 0))
        self.load_state_dict(state)

#----------------------------------------------------------------------------

"""The narrow interface every augmentation method implements.

The loss and the training loop talk only to these hooks, never to a concrete method, so that
adding a method never adds an ``if`` to the loss. Every hook has a no-op default: a method
overrides only what it changes.

Call order inside one training iteration (written once in ``asa_plugin/host.py``, which both
training/loss.py and patches/asa_loss.py call; tests/_call_order.py checks it against both):

    Dmain, real path:  mix_reals -> augment -> D(..., return_features=needs_features, attend=attend_maps())
                       -> observe_real_logits (raw logits) -> observe_features
                       -> adjust_logits(target='real') -> softplus
    Dmain, fake path:  augment -> D -> observe_features -> adjust_logits(target='fake')
    Gmain:             augment -> D -> adjust_logits(target='real')
    Gmain and Dmain:   the main loss is multiplied by main_loss_weight(phase)
    every phase:       extra_loss(phase, ...) is added to the phase's loss
    Dreg (R1):         mix_reals -> augment -> D -> observe_real_logits, gradient w.r.t. the clean (mixed) reals
    after the D step:  update(cur_nimg, batch_size)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from .dview import DiscriminatorView

#----------------------------------------------------------------------------
# What a method may know about the run; filled in once by the training loop.

@dataclasses.dataclass
class PluginContext:
    device:         torch.device                        # Device of G, D and the batches.
    c_dim:          int = 0                             # Label dimension, 0 = unconditional.
    img_resolution: int = 32                            # Training resolution.
    img_channels:   int = 3                             # 1 or 3.
    batch_size:     int = 32                            # Total batch over all ranks.
    batch_gpu:      int = 32                            # Per-rank batch per accumulation round.
    num_gpus:       int = 1                             # World size.
    rank:           int = 0                             # This process's rank.
    total_kimg:     float = 25000                       # Length of the run, for schedules.
    resumed:        bool = False                        # True when training continues from a pickle.
    D:              Optional[DiscriminatorView] = None  # What plugins may know of D (a D given here is wrapped).

    def __post_init__(self):
        # The one place a discriminator becomes the narrow view plugins see (asa_plugin/dview.py).
        if self.D is not None and not isinstance(self.D, DiscriminatorView):
            self.D = DiscriminatorView(self.D)

# Runs D on images: run_D(img, c, augment=True) -> (logits [N,1], features [N,C] or None).
RunD = Callable[..., tuple]

#----------------------------------------------------------------------------

class AugmentMethod(torch.nn.Module):
    """Base class of a data-efficient method; one subclass per file, registered by name."""

    name: str = ''                  # Registry name, set by @register_augment.
    needs_features: bool = False    # D must also return its penultimate features.

    # Facts the generic layer reads (spec rules in spec.py, order in stack.py); each method states
    # its own, so nothing generic names a method (docs/design.md "Augmentation plugin API").
    stage: int = 50                 # Position on D's input path; lower runs earlier, ties keep spec order.
    image_space: bool = False       # Transforms every image D sees (at most one such method, see below).
    provides_p: bool = False        # Owns an augmentation probability p that another method may share.
    alone: bool = False             # Means "no augmentation": cannot be combined with other methods.
    image_space_hint: str = ''      # Appended to the "both augment every image" error: how to combine on purpose.
    spec_words: Optional[str] = None  # Constructor argument that collects a spec's bare words, if any.
    spec_presets: dict = {}         # name -> spec text for 'method:preset=name' (a recipe; may add methods).

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError for option values out of range; builds nothing (spec validation)."""

    @classmethod
    def spec_conflict(cls, options: dict, others: dict) -> Optional[str]:
        """Why this method with ``options`` does not fit next to ``others`` ({name: (class, options)}),
        or None. The generic rules (duplicates, ``alone``, one ``provides_p``, one ``image_space``)
        are checked by spec.py before this."""
        return None

    @classmethod
    def shares_image_space(cls, options: dict) -> bool:
        """True when this image-space method may run after another one on explicit request."""
        return False

    def link(self, methods: list) -> None:
        """Connect to other methods of the same stack; called once by the stack after setup."""

    def setup(self, ctx: PluginContext) -> None:
        """Called once after G and D exist and before the first iteration."""
        self.ctx = ctx

    # --- image space ---------------------------------------------------------

    def augment(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Differentiable augmentation of every image D sees (reals, fakes, all phases, R1)."""
        return img

    def mix_reals(self, real_img: torch.Tensor, real_c: torch.Tensor,
                  gen_fn: Callable[[], tuple]) -> tuple:
        """Transform the real batch before D's real pass (APA). ``gen_fn()`` returns detached
        ``(gen_img, gen_c)`` of the same size, made from other latents than the D-fake batch (the
        G step's fakes of the same iteration), and is only called when needed."""
        return real_img, real_c

    # --- feedback from D -----------------------------------------------------

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        """Raw (unadjusted) logits of every real pass of D (Dmain and R1), for adaptive controllers."""

    def observe_features(self, features: torch.Tensor, c: torch.Tensor, kind: str) -> None:
        """Detached penultimate features of reals (kind='real') or fakes (kind='fake')."""

    def attend_maps(self) -> dict:
        """{resolution: module} applied to D's block output of that resolution in every D call of
        the loss. The host passes it per call, so nothing of the method is ever stored in D."""
        return {}

    # --- loss ----------------------------------------------------------------

    def adjust_logits(self, logits: torch.Tensor, features: Optional[torch.Tensor],
                      c: torch.Tensor, target: str, phase: str) -> torch.Tensor:
        """Logits that the logistic loss pushes towards ``target`` ('real' or 'fake')."""
        return logits

    def main_loss_weight(self, phase: str) -> float:
        """Factor on the main adversarial loss of 'Gmain' or 'Dmain' (DAG counts it once per group)."""
        return 1.0

    def extra_loss(self, phase: str, run_D: RunD, real_img: torch.Tensor, real_c: torch.Tensor,
                   gen_img: Optional[torch.Tensor], gen_c: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Additional per-sample or scalar loss for a phase ('Gmain', 'Dmain', ...), or None."""
        return None

    def extra_parameters(self, net: str) -> list:
        """Trainable parameters the method adds to 'G' or 'D' (optimized by that net's optimizer)."""
        return []

    # --- bookkeeping ---------------------------------------------------------

    def update(self, cur_nimg: int, batch_size: int) -> None:
        """Called once per iteration after the D phases; controllers step here."""

    def stats(self) -> dict:
        """Scalars for the tick line and stats.jsonl, keyed like 'Progress/augment'."""
        return {}

    def upstream_augment_pipe(self) -> Optional[torch.nn.Module]:
        """The upstream-compatible AugmentPipe to store under snapshot['augment_pipe'], if any."""
        return None

    def plugin_state(self) -> dict:
        """All training state as plain data (tensors, numbers, lists, dicts) for snapshots."""
        return {}

    def load_plugin_state(self, state: dict) -> None:
        """Restore what ``plugin_state`` returned, exactly."""

    def describe(self) -> str:
        """One line for the log: the method and its effective options."""
        return self.name

#----------------------------------------------------------------------------

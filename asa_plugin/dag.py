"""DAG: Data Augmentation optimized for GAN (Tran et al., arXiv 2006.05338; IEEE TIP 2021).

D's trunk is shared; each non-identity transformed view T_k gets its own linear head on D's
penultimate features, trained on T_k(reals) vs T_k(fakes), while D's own head (the identity
view) keeps playing the original game on un-transformed images, so nothing leaks into G's
distribution (docs/augmentations.md "dag"). Weighting as in the official BigGAN example, per transform
group g with n_g views including the identity, the main loss L_0 counted inside every group:

    L = L_0 + w * sum_g (1/n_g) * (L_0 + sum_{k in g, k != id} L_k)

so L_0 weighs 1 + w * sum_g 1/n_g (2.45 for rotation,cropping,translation,cutout at w = 1)
against w * sum_g (n_g - 1)/n_g for the heads (2.55). The loss multiplies its main loss by
``main_loss_weight``; ``extra_loss`` returns the heads' part. R1 stays on D's own head and is
not scaled (docs/augmentations.md, "dag").
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .base import AugmentMethod, PluginContext
from .diffaug import parse_word_list, rand_cutout, rand_translation
from .registry import register_augment
from .rng import MethodRandom

#----------------------------------------------------------------------------
# Transform groups (official config.py); each lists the identity first.

GROUPS = {
    'rotation':    ('identity', 'rot90', 'rot180', 'rot270'),
    'fliprot':     ('identity', 'flip_h', 'flip_w', 'rot90'),
    'cropping':    ('identity', 'crop_tl', 'crop_tr', 'crop_bl', 'crop_br'),
    'translation': ('identity', 'translation'),  # random, DiffAugment's ratio 1/8
    'cutout':      ('identity', 'cutout'),       # random, DiffAugment's ratio 1/2
}
CROP_FRACTION = 0.75

#----------------------------------------------------------------------------
# Policy text -> validated group list.

def parse_groups(policy: str) -> list:
    return parse_word_list(policy, GROUPS, 'transform group')

#----------------------------------------------------------------------------
# Which heads exist and how much each head's loss weighs (module docstring).

def head_plan(groups: list, weight: float = 1.0) -> list:
    """``[(group, view, loss weight)]`` for every extra head: weight / n_g per non-identity view."""
    return [(g, view, weight / len(GROUPS[g])) for g in groups for view in GROUPS[g] if view != 'identity']


def main_weight(groups: list, weight: float = 1.0) -> float:
    """Factor on D's own loss L_0: once by itself plus once inside every group, 1 + weight * sum_g 1/n_g."""
    return 1.0 + weight * sum(1.0 / len(GROUPS[g]) for g in groups)

#----------------------------------------------------------------------------
# One view of a batch [NCHW]; rotations assume square images (StyleGAN's are).

def _corner_crop(x: torch.Tensor, corner: str) -> torch.Tensor:
    H, W = x.shape[2], x.shape[3]
    ch, cw = max(int(round(H * CROP_FRACTION)), 1), max(int(round(W * CROP_FRACTION)), 1)
    top = 0 if corner[0] == 't' else H - ch
    left = 0 if corner[1] == 'l' else W - cw
    crop = x[:, :, top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(H, W), mode='nearest')  # official: interpolate's default mode

#----------------------------------------------------------------------------
# The view named `view` of a batch; random views draw from `gen`.

def dag_view(x: torch.Tensor, view: str, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    if view == 'identity':
        return x
    if view.startswith('rot'):
        return torch.rot90(x, int(view[3:]) // 90, dims=(2, 3))
    if view == 'flip_h':
        return x.flip(2)
    if view == 'flip_w':
        return x.flip(3)
    if view.startswith('crop_'):
        return _corner_crop(x, view[5:])
    if view == 'translation':
        return rand_translation(x, gen, 0.125)
    if view == 'cutout':
        return rand_cutout(x, gen, 0.5)
    raise ValueError(f'unknown DAG view "{view}"')

#----------------------------------------------------------------------------
# A head like D's `out` layer (equalized lr, gain 1/sqrt(C)) with the shared label projection:
# logit = <W f + b, cmap(c)> / sqrt(cmap_dim), or W f + b when unconditional.

def head_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                cmap: Optional[torch.Tensor]) -> torch.Tensor:
    x = F.linear(features.to(weight.dtype), weight * (1 / math.sqrt(weight.shape[1])), bias)  # [N, O]
    if cmap is None:
        return x
    return (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(weight.shape[0]))

#----------------------------------------------------------------------------

@register_augment('dag')
class DAG(AugmentMethod):
    spec_words = 'policy'
    needs_features = True
    stage = 30              # extra heads on transformed views, after image-space augmentation

    def __init__(self,
        policy:        str   = 'rotation',  # Comma-separated transform groups: rotation, fliprot, cropping, translation, cutout.
        weight_d:      float = 1.0,     # Weight of the heads' loss in D's loss (official module default 1.0).
        weight_g:      float = 1.0,     # Weight of the heads' loss in G's loss.
        augment_views: bool  = False,   # Also run the other methods' augmentation on the views (default: clean views).
        seed:          Optional[int] = None, # Seed of the heads' init and the random views.
    ):
        super().__init__()
        self.check_options(dict(policy=policy, weight_d=weight_d, weight_g=weight_g))
        self.groups = parse_groups(policy)
        self.policy = ','.join(self.groups)
        self.weight_d = float(weight_d)
        self.weight_g = float(weight_g)
        self.augment_views = bool(augment_views)
        self.plan = head_plan(self.groups)      # weights for w = 1; scaled by weight_d / weight_g
        self.rng = MethodRandom(seed)
        self.register_parameter('head_weight', None)    # [K, O, C] after setup
        self.register_parameter('head_bias', None)      # [K, O]

    @classmethod
    def check_options(cls, options: dict) -> None:
        parse_groups(options.get('policy', 'rotation'))
        for key in ('weight_d', 'weight_g'):
            value = options.get(key, 1.0)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{key}={value} must be a finite number >= 0')

    @property
    def num_heads(self) -> int:
        return len(self.plan)

    def setup(self, ctx: PluginContext) -> None:
        super().setup(ctx)
        if ctx.D is None:
            raise ValueError('dag: the context has no discriminator; build the stack after D, with its context')
        O, C = ctx.D.out_shape
        gen = torch.Generator().manual_seed(self.rng.seed)
        weight = torch.randn([self.num_heads, O, C], generator=gen)
        self.head_weight = torch.nn.Parameter(weight.to(ctx.D.device))
        self.head_bias = torch.nn.Parameter(torch.zeros([self.num_heads, O], device=ctx.D.device))
        self.rng.fold_in_rank(ctx.rank)

    def _cmap(self, c: torch.Tensor) -> Optional[torch.Tensor]:
        # The label projection is D's own and shared by all heads (official BigGAN-DAG).
        return self.ctx.D.label_map(c)

    def _head_pass(self, run_D, img, c, cmap, k, weight, bias, gen):
        _, features = run_D(dag_view(img, self.plan[k][1], gen), c, augment=self.augment_views)
        if features is None:
            raise RuntimeError('dag: run_D returned no features; the loss must pass return_features=True '
                               'when the stack needs_features')
        return head_logits(features, weight[k], bias[k], cmap)

    def main_loss_weight(self, phase):
        if phase in ('Dmain', 'Dboth'):
            return main_weight(self.groups, self.weight_d)
        if phase in ('Gmain', 'Gboth'):
            return main_weight(self.groups, self.weight_g)
        return 1.0

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        if self.head_weight is None:
            raise RuntimeError('dag: setup(ctx) must be called before training (it creates the heads)')
        is_D = phase in ('Dmain', 'Dboth')
        if not (is_D or phase in ('Gmain', 'Gboth')) or gen_img is None:
            return None
        scale = self.weight_d if is_D else self.weight_g
        if scale == 0:
            return None
        # G's step must not move the heads: they belong to D.
        weight, bias = (self.head_weight, self.head_bias) if is_D else (self.head_weight.detach(), self.head_bias.detach())
        gen = self.rng.generator(gen_img.device)
        cmap_gen = self._cmap(gen_c)
        cmap_real = self._cmap(real_c) if is_D else None
        loss_fake, loss_real = 0, 0
        for k, (_, _, w) in enumerate(self.plan):
            fake_logits = self._head_pass(run_D, gen_img, gen_c, cmap_gen, k, weight, bias, gen)
            if is_D:
                real_logits = self._head_pass(run_D, real_img, real_c, cmap_real, k, weight, bias, gen)
                loss_fake = loss_fake + w * F.softplus(fake_logits)
                loss_real = loss_real + w * F.softplus(-real_logits)
            else:
                loss_fake = loss_fake + w * F.softplus(-fake_logits)
        if not is_D:
            return loss_fake * scale
        if loss_fake.shape == loss_real.shape:
            return (loss_fake + loss_real) * scale
        return (loss_fake.mean() + loss_real.mean()) * scale

    def extra_parameters(self, net):
        if net != 'D' or self.head_weight is None:
            return []
        return [self.head_weight, self.head_bias]

    def plugin_state(self) -> dict:
        state = {'views': [f'{g}/{v}' for g, v, _ in self.plan], 'rng': self.rng.state_dict()}
        if self.head_weight is not None:
            state['head_weight'] = self.head_weight.detach().cpu().clone()
            state['head_bias'] = self.head_bias.detach().cpu().clone()
        return state

    def load_plugin_state(self, state: dict) -> None:
        views = [f'{g}/{v}' for g, v, _ in self.plan]
        if list(state['views']) != views:
            raise ValueError(f'dag: saved heads are for views {list(state["views"])}, this run has {views}; '
                             f'resume with the same dag policy')
        if 'head_weight' in state and self.head_weight is None:
            raise RuntimeError('dag: state arrived before setup(ctx); build the stack with its context, then load')
        self.rng.load_state_dict(state['rng'])
        if 'head_weight' in state:
            for param, key in [(self.head_weight, 'head_weight'), (self.head_bias, 'head_bias')]:
                saved = torch.as_tensor(state[key])
                if saved.shape != param.shape:
                    raise ValueError(f'dag: saved {key} has shape {list(saved.shape)}, this D needs '
                                     f'{list(param.shape)}; resume with the same D architecture')
                with torch.no_grad():
                    param.copy_(saved)

    def describe(self) -> str:
        return (f'dag (policy={self.policy}, {self.num_heads} extra heads, weight_d={self.weight_d:g}, '
                f'weight_g={self.weight_g:g}, main loss x{main_weight(self.groups, self.weight_d):g} (D) '
                f'x{main_weight(self.groups, self.weight_g):g} (G), {"augmented" if self.augment_views else "clean"} views)')

#----------------------------------------------------------------------------

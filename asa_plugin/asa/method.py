"""ASA, adversarial semantic augmentation, as an augmentation plugin (`--aug=asa`).

D's penultimate features of reals and fakes are tracked by covariances Sigma_real and Sigma_fake,
and the logistic loss sees D's logit under the implicit feature augmentation f~ ~ N(f, lambda Sigma),
i.e. l~ ~ N(l, lambda q) with q = w'Sigma w, through one of the forms of bound.py (default: the
moderated logit l / sqrt(1 + pi lambda q / 8); docs/asa.md §1b). Optional CBAM attention and a
reconstruction term (§5.3) sit behind flags that are off by default.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..base import AugmentMethod, PluginContext
from ..registry import register_augment
from . import bound as B
from .attention import CBAM
from .reconstruction import RECON_LOSSES, FeatureDecoder, recon_loss
from .tracker import COV_MODES, CovarianceTracker

#----------------------------------------------------------------------------
# Option values arrive typed (spec.py converts text once); these check ranges and choices.

def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f'unknown {name} "{value}"; use one of {", ".join(choices)}')
    return value

#----------------------------------------------------------------------------

@register_augment('asa')
class ASA(AugmentMethod):
    needs_features = True
    stage = 40              # last on D's path: bounds the logits
    # Named recipes for `asa:preset=NAME` (asa_plugin/spec.py); docs/asa.md §7 says where they come from.
    spec_presets = {
        # The released ASA code (kobeshegu/ASA-GAN train.py): DiffAugment on every D input, the
        # covariance of each batch, constant lambda 1, saturating G loss, ISDA's bound.
        'official': 'diffaug:color,translation,cutout+asa:lambda0=1,ramp=none,form=jensen,cov_mode=batch,g_loss=saturating',
    }

    def __init__(self,
        lambda0:       float = 1.0,         # Strength of the feature augmentation (docs/asa.md §3).
        ramp:          str   = 'none',      # 'none' (constant lambda0) | N kimg (0 -> lambda0 over the first N kimg).
        form:          str   = 'moderated', # 'moderated' | 'jensen' (ISDA's bound) | 'expected', see bound.py.
        cov_mode:      str   = 'batch',     # 'batch' | 'ema' | 'running', see tracker.py.
        ema_decay:     float = 0.999,       # ema: per-sample decay, memory ~ 1k samples.
        ema_floor:     float = 0.0,         # ema: minimum weight of a new batch, 0 = none.
        g_loss:        str   = 'ns',        # 'ns' (non-saturating) | 'saturating' (2022 code).
        per_class:     bool  = False,       # One Sigma per class (conditional datasets only).
        bound:         bool  = True,        # Apply the covariance bound (False: ablate it).
        attention:     bool  = False,       # CBAM in D at attention_res.
        attention_res: int   = None,        # Feature-map resolution for CBAM; None = min(32, img_resolution/2).
        recon:         float = 0.0,         # Weight of the reconstruction term in the D loss, 0 = off.
        recon_res:     int   = 16,          # Resolution of the reconstructed image (capped at img_resolution).
        recon_loss:    str   = 'l1',        # 'l1' | 'l2'.
        sync:          bool  = True,        # All-reduce covariance statistics across ranks.
    ):
        super().__init__()
        self.check_options(dict(lambda0=lambda0, ramp=ramp, form=form, cov_mode=cov_mode, ema_decay=ema_decay, ema_floor=ema_floor,
                                g_loss=g_loss, attention_res=attention_res, recon=recon, recon_res=recon_res, recon_loss=recon_loss))
        self.lambda0 = float(lambda0)
        self.ramp = B.parse_ramp(ramp)
        self.form = form
        self.cov_mode = cov_mode
        self.ema_decay = float(ema_decay)
        self.ema_floor = float(ema_floor)
        self.g_loss = g_loss
        self.per_class = bool(per_class)
        self.bound = bool(bound)
        self.attention = bool(attention)
        self.attention_res = None if attention_res in (None, 'none', 'auto') else int(attention_res)
        self.recon = float(recon)
        self.recon_res = int(recon_res)
        self.recon_loss = recon_loss
        self.sync = bool(sync)

        self.cur_nimg = 0
        self.lam = 0.0
        self.trackers = {'real': None, 'fake': None}
        self.cbam = None
        self.decoder = None
        self._acc = {}      # Device-side sums for the tick stats; read only in stats().
        self.ctx = None

    @classmethod
    def check_options(cls, options: dict) -> None:
        lambda0, recon, recon_res = options.get('lambda0', 1.0), options.get('recon', 0.0), options.get('recon_res', 16)
        ema_decay, ema_floor = options.get('ema_decay', 0.999), options.get('ema_floor', 0.0)
        attention_res = options.get('attention_res')
        if not lambda0 >= 0:
            raise ValueError(f'lambda0 must be >= 0, got {lambda0}')
        B.parse_ramp(options.get('ramp', 'none'))
        _choice('form', options.get('form', 'moderated'), B.FORMS)
        _choice('cov_mode', options.get('cov_mode', 'batch'), COV_MODES)
        if not (0 <= ema_decay <= 1 and 0 <= ema_floor <= 1):
            raise ValueError(f'ema_decay and ema_floor must be in [0, 1], got {ema_decay} and {ema_floor}')
        _choice('g_loss', options.get('g_loss', 'ns'), B.G_LOSS_FORMS)
        if attention_res not in (None, 'none', 'auto') and not isinstance(attention_res, int):
            raise ValueError(f'attention_res must be an integer (or auto), got {attention_res!r}')
        if not recon >= 0:
            raise ValueError(f'recon must be >= 0, got {recon}')
        if not isinstance(recon_res, int) or recon_res < 4 or recon_res & (recon_res - 1):
            raise ValueError(f'recon_res must be a power of two >= 4, got {recon_res}')
        _choice('recon_loss', options.get('recon_loss', 'l1'), RECON_LOSSES)

    # --- setup ---------------------------------------------------------------

    def setup(self, ctx: PluginContext) -> None:
        super().setup(ctx)
        if self.per_class and int(ctx.c_dim) == 0:
            raise ValueError('asa: per_class=true needs a conditional dataset (c_dim > 0); '
                             'drop per_class or train with --cond=1 on a labeled dataset')
        self.num_classes = int(ctx.c_dim) if self.per_class else 1
        self.lam = B.lambda_schedule(self.lambda0, self.ramp, self.cur_nimg)
        if self.attention:
            self._setup_attention(ctx)
        if self.recon > 0:
            self._setup_recon(ctx)

    def _require_D(self, what: str):
        if getattr(self, 'ctx', None) is None or self.ctx.D is None:
            raise RuntimeError(f'asa: {what} needs the discriminator; the training loop must pass ctx.D to setup()')
        return self.ctx.D

    def _setup_attention(self, ctx: PluginContext) -> None:
        D = self._require_D('attention')
        res = self.attention_res if self.attention_res is not None else min(32, int(ctx.img_resolution) // 2)
        try:
            channels = D.channels_at(res)
        except ValueError as e:
            raise ValueError(f'asa: attention_res={res}: {e}') from None
        self.attention_res = res
        self.cbam = CBAM(channels).to(ctx.device)

    def attend_maps(self) -> dict:
        return {self.attention_res: self.cbam} if self.cbam is not None else {}

    def _setup_recon(self, ctx: PluginContext) -> None:
        D = self._require_D('recon')
        with torch.no_grad():
            w, _b = D.last_layer(torch.zeros([1, int(ctx.c_dim)], device=ctx.device))
        res = min(self.recon_res, int(ctx.img_resolution))
        self.decoder = FeatureDecoder(int(w.shape[1]), int(ctx.img_channels), res).to(ctx.device)

    # --- feedback ------------------------------------------------------------

    def _class_index(self, c: torch.Tensor) -> Optional[torch.Tensor]:
        if self.num_classes == 1:
            return None
        return c.argmax(dim=1)

    def _tracker(self, kind: str, dim: int) -> CovarianceTracker:
        tracker = self.trackers[kind]
        if tracker is None:
            tracker = CovarianceTracker(dim, getattr(self, 'num_classes', 1), self.cov_mode,
                                        ema_decay=self.ema_decay, ema_floor=self.ema_floor, sync=self.sync)
            self.trackers[kind] = tracker
        return tracker

    def observe_features(self, features: torch.Tensor, c: torch.Tensor, kind: str) -> None:
        if not self.bound:
            return
        if kind not in self.trackers:
            raise ValueError(f'asa: observe_features kind must be "real" or "fake", got "{kind}"')
        self._tracker(kind, features.shape[1]).update(features.detach(), self._class_index(c))

    # --- loss ----------------------------------------------------------------

    def adjust_logits(self, logits: torch.Tensor, features: Optional[torch.Tensor],
                      c: torch.Tensor, target: str, phase: str) -> torch.Tensor:
        if not self.bound or self.lam == 0:
            return logits
        kind = 'fake' if (target == 'fake' or phase.startswith('G')) else 'real'
        if phase.startswith('G') and self.cov_mode == 'batch' and features is not None:
            sigma = self._batch_covariance(features, c)                 # The current G batch, as the 2022 code.
        else:
            tracker = self.trackers[kind]
            if tracker is None or tracker.num_updates == 0:
                return logits                                           # No Sigma yet: plain loss.
            sigma = tracker.covariance32()
        w, _b = self._require_D('adjust_logits').last_layer(c)
        q = B.quad_form(w.to(torch.float32), sigma, self._class_index(c))
        if phase.startswith('G') and self.g_loss == 'saturating':
            adjusted = B.saturating_surrogate(logits, q, self.lam, self.form)
        else:
            adjusted = B.adjusted_logits(logits, q, self.lam, target, self.form)
        self._accumulate(f'q_{kind}', q.detach())
        self._accumulate(f'margin_{kind}', (adjusted.detach() - logits.detach()).abs())
        return adjusted

    # Covariance of one batch of features only (cov_mode=batch in the G step).
    def _batch_covariance(self, features: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tracker = CovarianceTracker(features.shape[1], getattr(self, 'num_classes', 1), 'batch', sync=self.sync)
        tracker.update(features.detach(), self._class_index(c))
        return tracker.covariance32()

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        if self.decoder is None or phase not in ('Dmain', 'Dboth'):
            return None
        # Clean reals: the decoder cannot undo a random augmentation it does not see.
        _logits, features = run_D(real_img, real_c, augment=False)
        if features is None:
            raise RuntimeError('asa: recon needs D features; run_D must return them when needs_features is set')
        loss = recon_loss(self.decoder(features), real_img, self.recon_loss)
        self._accumulate('recon', loss.detach())
        return loss.mean() * self.recon

    def extra_parameters(self, net: str) -> list:
        if net != 'D':
            return []
        params = []
        for module in (self.cbam, self.decoder):
            if module is not None:
                params += list(module.parameters())
        return params

    # --- bookkeeping ---------------------------------------------------------

    def update(self, cur_nimg: int, batch_size: int) -> None:
        self.cur_nimg = int(cur_nimg)
        self.lam = B.lambda_schedule(self.lambda0, self.ramp, self.cur_nimg)

    # Sum, count and maximum per key, kept on the device until stats().
    def _accumulate(self, key: str, values: torch.Tensor) -> None:
        values = values.detach().to(torch.float32).reshape(-1)
        if key not in self._acc:
            self._acc[key] = (values.sum(), values.numel(), values.max())
            return
        total, count, peak = self._acc[key]
        self._acc[key] = (total + values.sum(), count + values.numel(), torch.maximum(peak, values.max()))

    def stats(self) -> dict:
        out = {'ASA/lambda': float(self.lam)}
        if self._acc:
            keys = sorted(self._acc)
            sums = torch.stack([self._acc[k][0] for k in keys] + [self._acc[k][2] for k in keys]).cpu().tolist()
            for i, key in enumerate(keys):
                out[f'ASA/{key}'] = sums[i] / max(self._acc[key][1], 1)
            for name in ('q', 'margin'):                                # Worst case of the tick, real or fake.
                peaks = [sums[len(keys) + i] for i, key in enumerate(keys) if key.startswith(f'{name}_')]
                if peaks:
                    out[f'ASA/{name}_max'] = max(peaks)
        self._acc = {}
        for kind, tracker in self.trackers.items():
            if tracker is not None:
                seen = tracker.count > 0
                trace = tracker.trace()[seen].mean() if bool(seen.any()) else torch.zeros([])
                out[f'ASA/trace_{kind}'] = float(trace)
                out[f'ASA/skipped_{kind}'] = int(tracker.skipped)
        return out

    def plugin_state(self) -> dict:
        return dict(
            version=1, cur_nimg=self.cur_nimg, lam=self.lam,
            trackers={k: (t.state_dict() if t is not None else None) for k, t in self.trackers.items()},
            cbam=_module_state(self.cbam), decoder=_module_state(self.decoder))

    def load_plugin_state(self, state: dict) -> None:
        if self.ctx is None:
            raise RuntimeError('asa: state arrived before setup(ctx); build the stack with its context, then load')
        self.cur_nimg = int(state['cur_nimg'])
        self.lam = float(state['lam'])
        for kind, sd in state['trackers'].items():
            if sd is not None:
                self._tracker(kind, int(sd['dim'])).load_state_dict(sd)
                self.trackers[kind].to(self.ctx.device)
        for name in ('cbam', 'decoder'):
            module, sd = getattr(self, name), state.get(name)
            if (module is None) != (sd is None):
                raise ValueError(f'asa: the saved state {"has" if sd is not None else "lacks"} {name} parameters '
                                 f'but this run has {name} {"off" if module is None else "on"}; use the same options to resume')
            if module is not None:
                module.load_state_dict(sd)

    def describe(self) -> str:
        opts = [f'lambda0={self.lambda0:g}', f'ramp={self.ramp}', f'form={self.form}', f'cov_mode={self.cov_mode}', f'g_loss={self.g_loss}',
                f'per_class={self.per_class}', f'bound={self.bound}', f'attention={self.attention}', f'recon={self.recon:g}']
        return f'asa({", ".join(opts)})'

#----------------------------------------------------------------------------

def _module_state(module: Optional[torch.nn.Module]) -> Optional[dict]:
    if module is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

#----------------------------------------------------------------------------

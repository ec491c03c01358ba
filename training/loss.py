"""StyleGAN2 loss: non-saturating logistic loss, lazy R1, path-length regularization, style mixing.

The augmentation plugin enters only through asa_plugin/host.py, the sequence of plugin calls
that patches/asa_loss.py shares; this file runs G and D and never asks which method is active.
The math lives in `training/regularizers.py`.
"""

from __future__ import annotations

import torch

from asa_plugin import host
from asa_plugin.noaug import NO_AUGMENTATION
from torch_utils import training_stats
from training import regularizers

#----------------------------------------------------------------------------
# Upstream's loss class (name kept for `loss_kwargs.class_name`), with G and D passed whole.

class StyleGAN2Loss:
    def __init__(self, device, G, D,
        augment             = NO_AUGMENTATION, # AugmentStack (asa_plugin); default: none.
        r1_gamma            = 10,       # R1 weight gamma; 0 = no R1.
        style_mixing_prob   = 0.9,      # Probability of mixing two latents per batch; 0 = off.
        pl_batch_shrink     = 2,        # The PL batch is batch_gpu // pl_batch_shrink.
        pl_decay            = 0.01,     # Lerp weight of the running PL mean.
        pl_weight           = 2,        # PL weight; 0 = no path-length regularization.
    ):
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment = augment
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=self.device)
        self._pseudo = {}           # round -> detached (G-step fakes, labels) of this iteration, for mix_reals

    # Loss state that must survive a resume (upstream drops pl_mean; we keep it).
    def state_dict(self) -> dict:
        return {'pl_mean': self.pl_mean.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.pl_mean = state['pl_mean'].to(self.device).clone()

    #------------------------------------------------------------------------
    # G(z, c) with style mixing; returns the image and the ws it was made from (for PL).

    def run_G(self, z, c):
        ws = self.G.mapping(z, c)
        coin, u = torch.rand([2]).tolist()
        cutoff = regularizers.mixing_cutoff(ws.shape[1], self.style_mixing_prob, coin, u)
        if cutoff < ws.shape[1]:
            ws2 = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        img = self.G.synthesis(ws)
        return img, ws

    # D on (optionally augmented) images; features and attended maps only when the plugin asks.
    def run_D(self, img, c, augment=True):
        if augment:
            img = self.augment.augment(img, c)
        attend = self.augment.attend_maps()
        if self.augment.needs_features:
            return self.D(img, c, return_features=True, attend=attend)
        return self.D(img, c, attend=attend), None

    #------------------------------------------------------------------------
    # One round of one phase: forward, loss, backward (scaled by gain). Returns the detached
    # total loss so that the loop's non-finite guard can see it.

    # round_idx: which batch_gpu round of the phase this is; it pairs a D round with the G round whose
    # fakes become its pseudo reals (mix_reals).
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, round_idx=0, **_unused):
        if phase not in ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'):
            raise ValueError(f'accumulate_gradients: unknown phase {phase!r}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0
        total = torch.zeros([], device=self.device)
        if do_Gmain:
            total += self._G_main(real_img, real_c, gen_z, gen_c, gain, round_idx)
        if do_Gpl:
            total += self._G_pl(gen_z, gen_c, gain)
        if phase in ('Greg', 'Gboth'):
            total += self._backward_extra('Greg', real_img, real_c, None, None, gain)
        gen_cache = {}
        if do_Dmain:
            total += self._D_fake(gen_z, gen_c, gain, gen_cache)
        if do_Dmain or do_Dr1:
            gen_fn = self._pseudo_fn(round_idx, gen_z, gen_c)
            total += self._D_real(real_img, real_c, gen_c, gain, gen_cache, gen_fn, do_Dmain, do_Dr1)
        if phase in ('Dreg', 'Dboth'):
            total += self._backward_extra('Dreg', real_img, real_c, None, None, gain)
        return total.detach()

    # Extra loss of a phase with nothing else to backpropagate (e.g. a regularizer-only phase).
    def _backward_extra(self, phase, real_img, real_c, gen_img, gen_c, gain):
        extra = host.extra_loss(self.augment, phase, self.run_D, real_img, real_c, gen_img, gen_c)
        if extra is None:
            return torch.zeros([], device=self.device)
        extra.mul(gain).backward()
        return extra.detach()

    #------------------------------------------------------------------------
    # Gmain: make D think the fakes are real.

    def _G_main(self, real_img, real_c, gen_z, gen_c, gain, round_idx):
        gen_img, _ws = self.run_G(gen_z, gen_c)
        if round_idx == 0:
            self._pseudo.clear()    # a new iteration: the previous G step's fakes are stale
        self._pseudo[round_idx] = (gen_img.detach(), gen_c.detach())
        loss = host.g_main(self.augment, self.run_D, gen_img, gen_c, real_img, real_c)
        loss.mul(gain).backward()
        return loss.detach()

    # Greg: path-length regularization on a shrunken batch.
    def _G_pl(self, gen_z, gen_c, gain):
        batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
        noise = regularizers.pl_noise(gen_img)
        (ws_grads,) = torch.autograd.grad((gen_img * noise).sum(), gen_ws, create_graph=True)
        lengths = regularizers.path_lengths(ws_grads)
        penalty, self.pl_mean = regularizers.pl_penalty(lengths, self.pl_mean, self.pl_decay)
        training_stats.report('Loss/pl_penalty', penalty)
        loss_Gpl = penalty * self.pl_weight
        training_stats.report('Loss/G/reg', loss_Gpl)
        # The zero term keeps every synthesis parameter in the graph (same gradient layout on all ranks).
        anchor = gen_img[:, 0, 0, 0] * 0
        (loss_Gpl + anchor).mean().mul(gain).backward()
        return loss_Gpl.detach().mean()

    #------------------------------------------------------------------------
    # Dmain, fake path: make D call the fakes fake.

    def _D_fake(self, gen_z, gen_c, gain, gen_cache):
        with torch.no_grad():
            gen_img, _ws = self.run_G(gen_z, gen_c)
        gen_cache['img'] = gen_img
        gen_cache['loss'], loss = host.d_fake(self.augment, self.run_D, gen_img, gen_c)
        loss.mul(gain).backward()
        return loss.detach()

    # Pseudo reals for mix_reals (APA): the G step's fakes of this round, made from other z than the
    # D-fake batch (DeceiveD's pseudo_data). Without a G step before (a D phase run alone), fresh
    # fakes from fresh z. Never saved: every iteration's G step runs before its D phases.
    def _pseudo_fn(self, round_idx, gen_z, gen_c):
        def gen_fn():
            cached = self._pseudo.get(round_idx)
            if cached is not None and cached[0].shape[0] == gen_z.shape[0]:
                return cached
            with torch.no_grad():
                return self.run_G(torch.randn_like(gen_z), gen_c)[0].detach(), gen_c
        return gen_fn

    # Dmain real path and/or R1: reals (possibly mixed with fakes by the plugin) through the
    # augmentation into D; R1 is the gradient w.r.t. those clean (mixed) reals. Both passes report
    # the real-logit signs and feed them to the controllers, as upstream's Dr1 does.
    def _D_real(self, real_img, real_c, gen_c, gain, gen_cache, gen_fn, do_Dmain, do_Dr1):
        real = host.d_real(self.augment, self.run_D, real_img, real_c, gen_fn, for_r1=do_Dr1)
        real_logits = real.logits
        loss = torch.zeros([], device=self.device)
        if do_Dmain:
            loss = loss + host.d_real_main(self.augment, self.run_D, real, real_img, real_c, gen_cache.get('img'), gen_c, gen_cache.get('loss'))
        if do_Dr1:
            r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real.img], create_graph=True, only_inputs=True)
            penalty = regularizers.r1_penalty(r1_grads)
            loss_Dr1 = penalty * (self.r1_gamma / 2)
            training_stats.report('Loss/r1_penalty', penalty)
            training_stats.report('Loss/D/reg', loss_Dr1)
            # The zero term keeps every D parameter in the graph, as in the PL phase.
            loss = loss + (real_logits * 0).mean() + loss_Dr1.mean()
        loss.mul(gain).backward()
        return loss.detach()

#----------------------------------------------------------------------------

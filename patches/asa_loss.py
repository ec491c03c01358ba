# Installed by asa_plugin's patches/apply.py as training/asa_loss.py of an upstream checkout
# (NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3); `apply.py --revert` removes it.
"""--aug=<asa_plugin spec> for an upstream StyleGAN2-ADA / StyleGAN3 checkout.

`ASALoss` subclasses upstream's `training.loss.StyleGAN2Loss` and routes every D input through an
`asa_plugin.AugmentStack`: APA mixes the real batch, upstream's own AugmentPipe (ADA, kept by
upstream exactly as before) and the stack's image methods augment, DAG adds heads, ASA bounds
the logits. Path-length regularization is upstream's. `route_aug_spec*` turn a spec into
upstream's own augmentation options plus these loss kwargs. Written for asa_plugin; see
patches/README.md in the StyleGAN2-ASA repository.
"""

import importlib
import inspect
import os
import sys

import click
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training.loss import StyleGAN2Loss

ASA_PLUGIN_ROOT = None              # set by apply.py: the StyleGAN2-ASA checkout that holds asa_plugin
UPSTREAM_MODES = ('ada', 'noaug', 'fixed')
PIPE_METHODS = ('ada', 'fixed')     # handled by upstream's own AugmentPipe and ADA controller

#----------------------------------------------------------------------------
# asa_plugin is found on sys.path, or in the checkout recorded at patch time (appended, so that
# upstream's own `training` and `torch_utils` packages keep precedence).

def import_asa_plugin():
    try:
        return importlib.import_module('asa_plugin')
    except ModuleNotFoundError as e:
        if e.name != 'asa_plugin' or not ASA_PLUGIN_ROOT:
            raise
    sys.path.append(ASA_PLUGIN_ROOT)
    return importlib.import_module('asa_plugin')

#----------------------------------------------------------------------------
# CLI hook: upstream's --aug accepts only noaug/ada/fixed; widen it to any string.

def widen_aug_option(command):
    for param in command.params:
        if param.name == 'aug':
            param.type = click.STRING
            param.help = (param.help or '') + ', or an asa_plugin spec such as diffaug+apa or ada:bgc,target=0.6+dag'
    return command

#----------------------------------------------------------------------------
# Validate a spec with asa_plugin and pick out its ADA part for upstream's own pipe.

def _split_spec(spec, error_cls):
    """(parsed spec, {ADA/fixed options} or None, name of the pipe method or None), validated."""
    asa_plugin = import_asa_plugin()
    try:
        asa_plugin.validate_spec(spec)
        parsed = asa_plugin.parse_spec(spec)
    except asa_plugin.SpecError as e:
        raise error_cls(f'--aug: {e}') from None
    pipe = [(n, o) for n, o in parsed if n in PIPE_METHODS]
    if not pipe:
        return parsed, None, None
    name, opts = pipe[0]
    if 'seed' in opts:
        raise error_cls(f'--aug={spec}: {name}:seed is not supported by upstream\'s AugmentPipe; drop it')
    return parsed, opts, name

#----------------------------------------------------------------------------
# Point upstream's loss_kwargs at ASALoss when the spec has methods beyond ADA.

def _loss_kwargs_for(loss_kwargs, D_opt_kwargs, spec, parsed):
    if any(n not in PIPE_METHODS for n, _ in parsed):   # else upstream's own loss does everything
        loss_kwargs.class_name = 'training.asa_loss.ASALoss'
        loss_kwargs.aug_spec = import_asa_plugin().canonical_spec(spec)
        loss_kwargs.extra_opt_kwargs = dict(D_opt_kwargs)

#----------------------------------------------------------------------------
# StyleGAN2-ADA train.py: called inside setup_training_loop_kwargs before its --aug branch.
# Returns the (aug, p, target, augpipe) that upstream's code below then handles as usual.

def route_aug_spec(args, aug, p, target, augpipe, error_cls):
    if aug in UPSTREAM_MODES:
        return aug, p, target, augpipe
    if p is not None or target is not None or augpipe is not None:
        raise error_cls(f'--aug={aug}: give p, target and the pipe inside the spec (e.g. --aug=ada:bgcfnc,target=0.7+apa), '
                        f'not as --p/--target/--augpipe')
    parsed, opts, name = _split_spec(aug, error_cls)
    _loss_kwargs_for(args.loss_kwargs, args.D_opt_kwargs, aug, parsed)
    if name is None:
        return 'noaug', None, None, None
    augpipe, presets = opts.get('pipe', 'bgc'), import_asa_plugin().ada.PRESETS
    if augpipe not in presets:
        raise error_cls(f'--aug={aug}: upstream\'s --augpipe takes a preset ({", ".join(presets)}), not "{augpipe}"')
    if name == 'fixed':
        return 'fixed', float(opts['p']), None, augpipe
    for key, upstream_key in [('interval', 'ada_interval'), ('kimg', 'ada_kimg'), ('p', 'augment_p')]:
        if key in opts:
            args[upstream_key] = opts[key]
    return 'ada', None, float(opts.get('target', 0.6)), augpipe

#----------------------------------------------------------------------------
# StyleGAN3 train.py: called in main() before its augmentation block; edits opts and c in place.

def route_aug_spec_sg3(c, opts, error_cls=click.ClickException):
    if opts.aug in UPSTREAM_MODES:
        return
    spec = opts.aug
    parsed, ada_opts, name = _split_spec(spec, error_cls)
    _loss_kwargs_for(c.loss_kwargs, c.D_opt_kwargs, spec, parsed)
    opts.aug = name or 'noaug'
    if name is None:
        return
    if ada_opts.get('pipe', 'bgc') != 'bgc':
        raise error_cls(f'--aug={spec}: StyleGAN3\'s train.py always uses the bgc pipe; drop pipe= / the preset word')
    if name == 'fixed':
        opts.p = float(ada_opts['p'])
        return
    opts.target = float(ada_opts.get('target', 0.6))
    for key, upstream_key in [('interval', 'ada_interval'), ('kimg', 'ada_kimg'), ('p', 'augment_p')]:
        if key in ada_opts:
            c[upstream_key] = ada_opts[key]

#----------------------------------------------------------------------------
# Upstream's augment_pipe followed by the stack's image methods, called by upstream's run_D.

class _AugmentChain:
    def __init__(self, pipe, stack):
        self.pipe, self.stack, self.enabled, self.c = pipe, stack, True, None

    def __call__(self, img):
        if not self.enabled:
            return img
        if self.pipe is not None:
            img = self.pipe(img)
        return self.stack.augment(img, self.c)

#----------------------------------------------------------------------------

class _PipeP:
    """The p of upstream's AugmentPipe, offered to methods that share p (apa:shared_p)."""
    provides_p = True

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def p(self):
        return float(self.pipe.p)

#----------------------------------------------------------------------------

class DFeatureAPI:
    """Upstream's D plus the `last_layer(c)` of StyleGAN2-ASA's feature API (docs/design.md), computed
    from D's own b4.out and mapping without adding anything to D, so its pickles stay upstream's."""
    def __init__(self, D):
        self._D = D

    def __getattr__(self, name):
        if name == '_D':
            raise AttributeError(name)
        return getattr(self._D, name)

    def __call__(self, *args, **kwargs):
        return self._D(*args, **kwargs)

    def last_layer(self, c):
        out = self._D.b4.out
        weight = out.weight.float() * out.weight_gain     # [O, C] effective (equalized lr)
        bias = out.bias.float() * out.bias_gain           # [O]
        if self._D.c_dim == 0:
            return weight[0].expand(c.shape[0], -1), bias[0].expand(c.shape[0])
        cmap = self._D.mapping(None, c).float() / (weight.shape[0] ** 0.5)
        return cmap @ weight, cmap @ bias

#----------------------------------------------------------------------------
# D as built, whether or not DDP wraps it.

def _unwrap(module):
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


# A block's forward returns (x, img); the attended map replaces x.
def _attend_hook(fn):
    return lambda module, inputs, output: (fn(output[0]),) + tuple(output[1:])

#----------------------------------------------------------------------------
# 'torch.optim.Adam' -> the class (upstream's dnnlib is not needed for this).

def _resolve(class_name):
    module, _, name = class_name.rpartition('.')
    return getattr(importlib.import_module(module), name)

#----------------------------------------------------------------------------

class ASALoss(StyleGAN2Loss):
    def __init__(self, *args, aug_spec='noaug', extra_opt_kwargs=None, D_reg_interval=16, **kwargs):
        super().__init__(*args, **kwargs)
        asa_plugin = import_asa_plugin()
        self.host = asa_plugin.host     # the plugin calls of each phase, shared with training/loss.py
        self.flavour = 'sg2' if 'G_mapping' in inspect.signature(StyleGAN2Loss.__init__).parameters else 'sg3'
        D = _unwrap(self.D)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        ctx = asa_plugin.PluginContext(
            device=torch.device(self.device), c_dim=D.c_dim, img_resolution=D.img_resolution,
            img_channels=D.img_channels, num_gpus=torch.distributed.get_world_size() if dist else 1,
            rank=torch.distributed.get_rank() if dist else 0, D=DFeatureAPI(D))
        self.aug_spec = aug_spec
        self.stack = asa_plugin.create_augment_stack(aug_spec, ctx, exclude=PIPE_METHODS).to(self.device)
        if self.augment_pipe is not None:  # ada/fixed of the spec run as upstream's own pipe
            for method in self.stack.methods:
                method.link(list(self.stack.methods) + [_PipeP(self.augment_pipe)])
        self.chain = _AugmentChain(self.augment_pipe, self.stack)
        self.augment_pipe = self.chain  # upstream's run_D calls it on every image D sees
        self.features = None
        if self.stack.extra_parameters('G'):
            raise ValueError(f'--aug={aug_spec}: methods with extra G parameters are not supported by the patch')
        self.extra_opt = None
        params = self.stack.extra_parameters('D')
        if params:  # D's optimizer is built from D.parameters() by upstream; train the heads alongside
            opt_kwargs = dict(extra_opt_kwargs or dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8))
            ratio = D_reg_interval / (D_reg_interval + 1)   # the same lazy-regularization correction
            opt_cls = _resolve(opt_kwargs.pop('class_name'))
            opt_kwargs['lr'] = opt_kwargs['lr'] * ratio
            opt_kwargs['betas'] = [beta ** ratio for beta in opt_kwargs.get('betas', [0, 0.99])]
            self.extra_opt = opt_cls(params, **opt_kwargs)
        self.pseudo = None      # the last Gmain fakes, detached: APA's pseudo reals (official behaviour)
        self.d_nimg = 0         # reals seen by Dmain since the last stack update
        self.cur_nimg = 0
        self.last_phase = None
        self.blur_sigma = 0

    def _keep_features(self, module, inputs, output):
        self.features = output

    # D's penultimate features and attended maps (upstream's D has neither return_features nor
    # attend): hooks that live only for one forward, so neither D nor its snapshot pickle ever holds them.
    def _forward_with_call_hooks(self, forward):
        D = _unwrap(self.D)
        handles = []
        try:
            if self.stack.needs_features:
                handles.append(D.b4.fc.register_forward_hook(self._keep_features))
            for res, fn in self.stack.attend_maps().items():
                handles.append(getattr(D, f'b{2 * res}').register_forward_hook(_attend_hook(fn)))
            return forward()
        finally:
            for handle in handles:
                handle.remove()

    # --- upstream's G and D, flavour by flavour ---------------------------------

    def _G(self, z, c, sync, for_D=False):
        if self.flavour == 'sg2':
            return self.run_G(z, c, sync=sync)[0]
        return self.run_G(z, c, update_emas=for_D)[0]

    def _D(self, img, c, sync=False, augment=True, update_emas=False):
        self.chain.enabled, self.chain.c, self.features = augment, c, None
        if self.flavour == 'sg2':
            logits = self._forward_with_call_hooks(lambda: self.run_D(img, c, sync=sync))
        else:
            logits = self._forward_with_call_hooks(lambda: self.run_D(img, c, blur_sigma=self.blur_sigma, update_emas=update_emas))
        self.chain.enabled = True
        features = self.features.float() if self.stack.needs_features and self.features is not None else None
        return logits, features

    # run_D as asa_plugin.host calls it: (img, c, augment=True) -> (logits, features).
    def _run_D_with(self, sync=False, update_emas=False):
        return lambda img, c, augment=True: self._D(img, c, sync=sync, augment=augment, update_emas=update_emas)

    def _gen_fn(self, gen_z, gen_c):
        def gen_fn():
            if self.pseudo is not None and self.pseudo[0].shape[0] == gen_z.shape[0]:
                return self.pseudo
            with torch.no_grad():
                return self._G(torch.randn_like(gen_z), gen_c, sync=False).detach(), gen_c
        return gen_fn

    # --- phases -------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, *args, **kwargs):
        # sg2: (..., sync, gain); sg3: (..., gain, cur_nimg). Bind against upstream's own signature.
        call = inspect.signature(StyleGAN2Loss.accumulate_gradients).bind(
            self, phase, real_img, real_c, gen_z, gen_c, *args, **kwargs).arguments
        gain, sync = call['gain'], call.get('sync', True)
        if self.flavour == 'sg3':
            cur_nimg = call['cur_nimg']
            self.blur_sigma = (max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma
                               if self.blur_fade_kimg > 0 else 0)
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'], phase
        if phase.startswith('G') and (self.last_phase or '').startswith('D'):
            self._finish_D_step()
        self.last_phase = phase
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        if phase in ('Gmain', 'Gboth'):
            self._G_main(real_img, real_c, gen_z, gen_c, sync and not do_Gpl, gain)
        if do_Gpl:
            super().accumulate_gradients('Greg', real_img, real_c, gen_z, gen_c, *args, **kwargs)
        if phase in ('Greg', 'Gboth'):
            self._reg_extra('Greg', real_img, real_c, gain)
        if phase in ('Dmain', 'Dboth'):
            self._D_main(real_img, real_c, gen_z, gen_c, sync, gain)
        if phase in ('Dreg', 'Dboth') and self.r1_gamma != 0:
            self._D_r1(real_img, real_c, gen_z, gen_c, sync, gain)
        if phase in ('Dreg', 'Dboth'):
            self._reg_extra('Dreg', real_img, real_c, gain)

    # The plugin calls of each phase are asa_plugin.host's, in the same order as training/loss.py.

    def _G_main(self, real_img, real_c, gen_z, gen_c, sync, gain):
        gen_img = self._G(gen_z, gen_c, sync=sync)
        self.pseudo = (gen_img.detach(), gen_c.detach())
        self.host.g_main(self.stack, self._run_D_with(), gen_img, gen_c, real_img, real_c).mul(gain).backward()

    def _D_main(self, real_img, real_c, gen_z, gen_c, sync, gain):
        with torch.no_grad():
            gen_img = self._G(gen_z, gen_c, sync=False, for_D=True)
        fake_loss, loss = self.host.d_fake(self.stack, self._run_D_with(update_emas=True), gen_img, gen_c)
        loss.mul(gain).backward()
        run_D = self._run_D_with(sync)
        real = self.host.d_real(self.stack, run_D, real_img, real_c, self._gen_fn(gen_z, gen_c), for_r1=False)
        self.host.d_real_main(self.stack, run_D, real, real_img, real_c, gen_img, gen_c, fake_loss).mul(gain).backward()
        self.d_nimg += real_img.shape[0]

    def _D_r1(self, real_img, real_c, gen_z, gen_c, sync, gain):
        real = self.host.d_real(self.stack, self._run_D_with(sync), real_img, real_c, self._gen_fn(gen_z, gen_c), for_r1=True)
        with conv2d_gradfix.no_weight_gradients():
            grads = torch.autograd.grad(outputs=[real.logits.sum()], inputs=[real.img], create_graph=True, only_inputs=True)[0]
        penalty = grads.square().sum([1, 2, 3])
        loss = penalty * (self.r1_gamma / 2)
        training_stats.report('Loss/r1_penalty', penalty)
        training_stats.report('Loss/D/reg', loss)
        (real.logits * 0 + loss).mean().mul(gain).backward()

    # A regularization phase's extra loss (none of the shipped methods has one).
    def _reg_extra(self, phase, real_img, real_c, gain):
        extra = self.host.extra_loss(self.stack, phase, self._run_D_with(), real_img, real_c, None, None)
        if extra is not None:
            extra.mul(gain).backward()

    def _finish_D_step(self):
        # Runs when the next G phase starts, i.e. after upstream stepped D: controllers and heads.
        if self.d_nimg == 0:
            return
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        batch = self.d_nimg * (torch.distributed.get_world_size() if dist else 1)
        self.cur_nimg += batch
        self.d_nimg = 0
        if self.extra_opt is not None:
            for group in self.extra_opt.param_groups:
                for param in group['params']:
                    if param.grad is not None:
                        torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            self.extra_opt.step()
            self.extra_opt.zero_grad(set_to_none=True)
        self.stack.update(self.cur_nimg, batch)
        for key, value in self.stack.stats().items():
            training_stats.report(key, value)

    # Plugin state beside each snapshot (upstream's loop knows nothing of it): APA's p, DAG's heads
    # and their Adam, ASA's covariances, each method's random stream, and the loss's image count.
    # apply.py inserts the two calls into upstream's training_loop.py. Plain tensors and numbers,
    # read back with weights_only=True: loading it runs no code.

    def save_plugin_state(self, snapshot_pkl):
        state = dict(aug_spec=self.aug_spec, cur_nimg=self.cur_nimg, stack=self.stack.plugin_state(),
                     extra_opt=self.extra_opt.state_dict() if self.extra_opt is not None else None)
        path = plugin_state_path(snapshot_pkl)
        tmp = path + '.tmp'
        torch.save(state, tmp)
        os.replace(tmp, path)   # a kill leaves the previous file or none, never half of one

    def load_plugin_state(self, resume_pkl):
        if resume_pkl is None:
            return
        path = plugin_state_path(str(resume_pkl))
        if not os.path.isfile(path):
            print(f'asa_plugin: no {os.path.basename(path)} beside --resume; the methods start fresh')
            return
        state = torch.load(path, map_location='cpu', weights_only=True)
        if state.get('aug_spec') != self.aug_spec:
            print(f'asa_plugin: {os.path.basename(path)} was saved with --aug={state.get("aug_spec")}, '
                  f'not this run\'s; the methods start fresh')
            return
        self.stack.load_plugin_state(state['stack'])
        self.stack.to(self.device)
        if self.extra_opt is not None and state['extra_opt'] is not None:
            self.extra_opt.load_state_dict(state['extra_opt'])
        self.cur_nimg = int(state['cur_nimg'])
        print(f'asa_plugin: restored the plugin state from {os.path.basename(path)}')

#----------------------------------------------------------------------------
# network-snapshot-000040.pkl -> network-snapshot-000040.asa_plugin.pt

def plugin_state_path(snapshot_pkl):
    return os.path.splitext(snapshot_pkl)[0] + '.asa_plugin.pt'

#----------------------------------------------------------------------------

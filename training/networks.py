"""StyleGAN2 generator and discriminator, checkpoint-compatible with StyleGAN2-ADA-pytorch.

Constructor arguments, attribute names, parameter/buffer names, their shapes and their
registration order follow upstream exactly, because pickles store module state by name and
resume copies tensors by dotted name. This file is embedded in every snapshot and may be
exec'd by upstream's loader against upstream's torch_utils, so it imports only numpy, torch,
torch_utils.{misc,persistence} and torch_utils.ops.{conv2d_resample,upfirdn2d,bias_act,fma},
and calls them only with arguments upstream's versions accept.
"""

import numpy as np
import torch
from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d
from torch_utils.ops import bias_act
from torch_utils.ops import fma

#----------------------------------------------------------------------------
# Default gain of an activation: sqrt(2) keeps the signal variance of He-initialized layers.

_SQRT2_ACTIVATIONS = ('relu', 'lrelu', 'swish')

def _def_gain(activation):
    return float(np.sqrt(2)) if activation in _SQRT2_ACTIVATIONS else 1.0

#----------------------------------------------------------------------------
# Small shared pieces of the layers below: fresh N(0,1) conv weights in the requested
# memory format, an optional cast, and the clamp value scaled by the caller's gain.

def _new_conv_weight(out_channels, in_channels, kernel_size, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.randn(out_channels, in_channels, kernel_size, kernel_size).to(memory_format=fmt)

def _cast_or_none(t, dtype):
    return None if t is None else t.to(dtype)

def _scaled_clamp(conv_clamp, gain):
    return None if conv_clamp is None else conv_clamp * gain

# Activation dtype and memory format of a block; force_fp32 overrides both.

def _block_formats(use_fp16, channels_last, force_fp32):
    if force_fp32:
        return torch.float32, torch.contiguous_format
    return (torch.float16 if use_fp16 else torch.float32), (torch.channels_last if channels_last else torch.contiguous_format)

#----------------------------------------------------------------------------
# Scale each row to unit second moment (pixel norm for latents and label embeddings).

@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    inv_rms = x.square().mean(dim=dim, keepdim=True).add(eps).rsqrt()
    return x * inv_rms

#----------------------------------------------------------------------------
# Modulated convolution (StyleGAN2 Eq. 1-3), split into small pure steps.
# fp16 safeguard: rescale weight and styles so the per-sample weights cannot overflow.
# Demodulation makes the result invariant to both scales, so this changes only rounding.

def _prenormalize_fp16(weight, styles):
    _out_channels, in_channels, kh, kw = weight.shape
    peak_w = weight.abs().amax(dim=(1, 2, 3), keepdim=True)                           # per output channel
    weight = weight * (1 / np.sqrt(in_channels * kh * kw) / peak_w)
    styles = styles / styles.abs().amax(dim=1, keepdim=True)                          # per sample
    return weight, styles

# Per-sample weights: w[n,o,i,:,:] = weight[o,i,:,:] * styles[n,i].

def _per_sample_weights(weight, styles):
    return weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)        # [NOIkk]

# Demodulation coefficients 1/||w[n,o]||, one per sample and output channel.

def _demod_coefficients(w):
    return w.square().sum(dim=(2, 3, 4)).add(1e-8).rsqrt()                           # [N, O]

# Training path: scale activations before and after a shared-weight convolution.

def _modconv_by_scaling(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight):
    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    x = x * styles.to(x.dtype)[:, :, None, None]
    x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), **resample)
    if dcoefs is not None:
        d = dcoefs.to(x.dtype)[:, :, None, None]
        if noise is not None:
            return fma.fma(x, d, noise.to(x.dtype))
        return x * d
    if noise is not None:
        return x.add_(noise.to(x.dtype))
    return x

# Inference path: fold the batch into channels and run one grouped convolution.

def _modconv_grouped(x, w, noise, up, down, padding, resample_filter, flip_weight):
    with misc.suppress_tracer_warnings(): # The batch size becomes a constant when tracing.
        n = int(x.shape[0])
    misc.assert_shape(x, [n, w.shape[2], None, None])
    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    x = x.flatten(0, 1).unsqueeze(0)                     # [1, N*I, H, W]
    w = w.flatten(0, 1)                                  # [N*O, I, kh, kw]
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), groups=n, **resample)
    x = x.unflatten(1, (n, -1)).squeeze(0)               # [N, O, H', W']
    if noise is not None:
        x = x.add_(noise)
    return x

@misc.profiled_function
def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
        demodulate=True, flip_weight=True, fused_modconv=True):
    n = x.shape[0]
    fan_in = weight.shape[1]
    misc.assert_shape(x, [n, fan_in, None, None])
    misc.assert_shape(styles, [n, fan_in])
    if demodulate and x.dtype == torch.float16:
        weight, styles = _prenormalize_fp16(weight, styles)

    w = _per_sample_weights(weight, styles) if (demodulate or fused_modconv) else None
    dcoefs = _demod_coefficients(w) if demodulate else None
    if not fused_modconv:
        return _modconv_by_scaling(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight)
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    return _modconv_grouped(x, w, noise, up, down, padding, resample_filter, flip_weight)

#----------------------------------------------------------------------------
# Dense layer with equalized learning rate: weights are stored unscaled and multiplied
# by weight_gain at run time, so Adam sees the same dynamic range for every layer.

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1,
            bias_init=0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features).div_(lr_multiplier))
        self.bias = None
        if bias:
            self.bias = torch.nn.Parameter(torch.full((out_features,), float(bias_init), dtype=torch.float32))
        self.weight_gain = lr_multiplier / np.sqrt(in_features)  # He init, scaled at run time
        self.bias_gain = lr_multiplier

    def effective_weight_and_bias(self, dtype=torch.float32):
        """The weight [out,in] and bias [out] (or None) actually applied, gains included."""
        w = self.weight.to(dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        return w, b

    def forward(self, x):
        w, b = self.effective_weight_and_bias(x.dtype)
        if b is not None and self.activation == 'linear':
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)

#----------------------------------------------------------------------------
# Convolution with equalized learning rate, optional FIR up/downsampling, bias, activation
# and clamping. trainable=False keeps weight/bias as buffers (frozen D layers).

@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1, down=1,
            resample_filter=[1,3,3,1], conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.activation, self.conv_clamp = activation, conv_clamp
        self.up, self.down = up, down
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = _def_gain(activation)

        weight = _new_conv_weight(out_channels, in_channels, kernel_size, channels_last)
        bias = torch.zeros(out_channels) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = None if bias is None else torch.nn.Parameter(bias)
        else: # frozen layer (Freeze-D): same names, kept as buffers so the optimizer never sees them
            self.register_buffer('weight', weight)
            if bias is None:
                self.bias = None
            else:
                self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        flip = (self.up == 1) # Transposed conv (up > 1) wants a flipped kernel.
        scaled_w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(x=x, w=scaled_w, f=self.resample_filter, up=self.up, down=self.down,
            padding=self.padding, flip_weight=flip)
        return bias_act.bias_act(x, _cast_or_none(self.bias, x.dtype), act=self.activation,
            gain=self.act_gain * gain, clamp=_scaled_clamp(self.conv_clamp, gain))

#----------------------------------------------------------------------------
# Mapping network: z (and an embedded label c) -> w, broadcast to num_ws copies, with the
# running average w_avg used for the truncation trick.

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
            activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta

        # Widths: label embedding (0 without labels), hidden layers, then w.
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [hidden] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx, (n_in, n_out) in enumerate(zip(features[:-1], features[1:])):
            self.add_module(f'fc{idx}', FullyConnectedLayer(n_in, n_out, activation=activation, lr_multiplier=lr_multiplier))
        if w_avg_beta is not None and num_ws is not None:
            self.register_buffer('w_avg', torch.zeros(w_dim))

    def _embed_inputs(self, z, c):
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        if len(parts) <= 1:
            return parts[0] if parts else None
        return torch.cat(parts, dim=1)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        with torch.autograd.profiler.record_function('input'):
            x = self._embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        # Track the average w while training: w_avg <- lerp(mean(w), w_avg, beta).
        if self.training and self.w_avg_beta is not None and not skip_w_avg_update:
            with torch.autograd.profiler.record_function('update_w_avg'):
                batch_mean = x.detach().mean(0)
                self.w_avg.copy_(batch_mean.lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            with torch.autograd.profiler.record_function('broadcast'):
                x = x[:, None, :].repeat(1, self.num_ws, 1)

        # Truncation trick: pull w toward w_avg, for the first truncation_cutoff layers if given.
        if truncation_psi != 1:
            with torch.autograd.profiler.record_function('truncate'):
                assert self.w_avg_beta is not None, 'truncation needs w_avg (w_avg_beta is None)'
                if self.num_ws is not None and truncation_cutoff is not None:
                    head = x[:, :truncation_cutoff]
                    x[:, :truncation_cutoff] = self.w_avg.lerp(head, truncation_psi)
                else:
                    x = self.w_avg.lerp(x, truncation_psi)
        return x

#----------------------------------------------------------------------------
# One modulated 3x3 convolution of the synthesis network, with per-pixel noise.

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
            activation='lrelu', resample_filter=[1,3,3,1], conv_clamp=None, channels_last=False):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding, self.act_gain = kernel_size // 2, _def_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1) # styles start at 1
        self.weight = torch.nn.Parameter(_new_conv_weight(out_channels, in_channels, kernel_size, channels_last))
        if use_noise:
            self.register_buffer('noise_const', torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.zeros(()))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def _noise(self, x, noise_mode):
        if not self.use_noise or noise_mode == 'none':
            return None
        if noise_mode == 'random':
            return torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        assert noise_mode in ['random', 'const', 'none'], f'noise_mode must be random, const or none, not {noise_mode!r}'
        side = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], side, side])
        x = modulated_conv2d(x, self.weight, self.affine(w), noise=self._noise(x, noise_mode), up=self.up,
            padding=self.padding, resample_filter=self.resample_filter, flip_weight=(self.up == 1),
            fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
            clamp=_scaled_clamp(self.conv_clamp, gain))

#----------------------------------------------------------------------------
# Modulated 1x1 convolution to image channels, without demodulation.

@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1) # styles start at 1
        self.weight = torch.nn.Parameter(_new_conv_weight(out_channels, in_channels, kernel_size, channels_last))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w, fused_modconv=True):
        # No demodulation here, so the equalized-lr gain goes into the styles instead.
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False,
            fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

#----------------------------------------------------------------------------
# One resolution of the synthesis network: (const or conv0 up) -> conv1 -> optional torgb,
# in the 'orig', 'skip' or 'resnet' architecture.

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
            architecture='skip', resample_filter=[1,3,3,1], conv_clamp=None, use_fp16=False,
            fp16_channels_last=False, **layer_kwargs):
        assert architecture in ['orig', 'skip', 'resnet'], f'architecture must be orig, skip or resnet, not {architecture!r}'
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16 = use_fp16
        self.channels_last = fp16_channels_last if use_fp16 else False
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        first = (in_channels == 0)
        has_rgb = (architecture == 'skip' or is_last)
        self.num_conv = 1 if first else 2
        self.num_torgb = 1 if has_rgb else 0

        # Registration order (const/conv0, conv1, torgb, skip) fixes the state_dict order.
        # conv1 keeps the default filter on purpose: it never resamples, but its buffer is saved.
        shared = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if first:
            self.const = torch.nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                **shared, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **shared, **layer_kwargs)
        if has_rgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                channels_last=self.channels_last)
        if not first and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, up=2, bias=False,
                channels_last=self.channels_last, resample_filter=resample_filter)

    def _formats(self, force_fp32):
        return _block_formats(self.use_fp16, self.channels_last, force_fp32)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        ws_left = list(ws.unbind(dim=1)) # consumed front to back: conv0, conv1, torgb
        dtype, memory_format = self._formats(force_fp32)
        if fused_modconv is None:
            # Grouped conv wins at inference, except in fp16 with a batch (overflow-prone, slow).
            with misc.suppress_tracer_warnings():
                fused_modconv = not self.training and (dtype != torch.float16 or int(x.shape[0]) == 1)

        half = self.resolution // 2
        conv_args = dict(fused_modconv=fused_modconv, **layer_kwargs)
        if self.in_channels == 0:
            # First block: the learned constant, one copy per sample.
            x = self.const.to(dtype=dtype, memory_format=memory_format)[None].repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws_left.pop(0), **conv_args)
        else:
            misc.assert_shape(x, [None, self.in_channels, half, half])
            x = x.to(dtype=dtype, memory_format=memory_format)
            shortcut = self.skip(x, gain=np.sqrt(0.5)) if self.architecture == 'resnet' else None
            x = self.conv0(x, ws_left.pop(0), **conv_args)
            if shortcut is None:
                x = self.conv1(x, ws_left.pop(0), **conv_args)
            else: # resnet: both branches scaled by sqrt(1/2) to keep the variance
                x = shortcut.add_(self.conv1(x, ws_left.pop(0), gain=np.sqrt(0.5), **conv_args))

        # Image path: upsample the running image and add this block's RGB (always fp32).
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, half, half])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            rgb = self.torgb(x, ws_left.pop(0), fused_modconv=fused_modconv)
            rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = rgb if img is None else img.add_(rgb)

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

#----------------------------------------------------------------------------
# Channel count per resolution and the fp16 threshold, shared by G and D.

def _channels_at(channel_base, channel_max, res):
    return min(channel_base // res, channel_max)

def _fp16_resolution(img_resolution_log2, num_fp16_res):
    return max(2 ** (img_resolution_log2 + 1 - num_fp16_res), 8)

#----------------------------------------------------------------------------
# Synthesis network: ws [N, num_ws, w_dim] -> image [N, img_channels, res, res].

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
            num_fp16_res=0, **block_kwargs):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, \
            f'img_resolution must be a power of 2 >= 4, not {img_resolution}'
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [4 << k for k in range(self.img_resolution_log2 - 1)] # 4, 8, ..., img_resolution
        fp16_resolution = _fp16_resolution(self.img_resolution_log2, num_fp16_res)
        channels = lambda res: _channels_at(channel_base, channel_max, res)

        # Every block consumes num_conv ws; only the last block's torgb needs one of its own.
        self.num_ws = 0
        for res in self.block_resolutions:
            last = (res == img_resolution)
            block = SynthesisBlock(0 if res == 4 else channels(res // 2), channels(res), w_dim=w_dim,
                resolution=res, img_channels=img_channels, is_last=last, use_fp16=(res >= fp16_resolution),
                **block_kwargs)
            self.add_module(f'b{res}', block)
            self.num_ws += block.num_conv + (block.num_torgb if last else 0)

    def forward(self, ws, **block_kwargs):
        # Block i reads ws[idx : idx+num_conv+num_torgb]; idx advances by num_conv only,
        # so a block's torgb shares its w with the next block's conv0.
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        blocks = [getattr(self, f'b{res}') for res in self.block_resolutions]
        with torch.autograd.profiler.record_function('split_ws'):
            ws = ws.to(torch.float32)
            starts = np.cumsum([0] + [b.num_conv for b in blocks[:-1]])
            block_ws = [ws.narrow(1, int(s), b.num_conv + b.num_torgb) for s, b in zip(starts, blocks)]

        x = img = None
        for block, cur_ws in zip(blocks, block_ws):
            x, img = block(x, img, cur_ws, **block_kwargs)
        return img

#----------------------------------------------------------------------------
# Generator: z, c -> mapping -> ws -> synthesis -> image. synthesis is registered first,
# so named_parameters() lists it before mapping, as upstream's does.

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},
            synthesis_kwargs={}):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(img_resolution=img_resolution, img_channels=img_channels, w_dim=w_dim,
            **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(num_ws=self.num_ws, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), **synthesis_kwargs)

#----------------------------------------------------------------------------
# One resolution of the discriminator: (fromrgb) -> conv0 -> conv1 down, with a 1x1 skip for resnet.
# Layers whose global index is below freeze_layers keep their weights as buffers (Freeze-D).

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
            architecture='resnet', activation='lrelu', resample_filter=[1,3,3,1], conv_clamp=None,
            use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        assert in_channels in [0, tmp_channels], 'in_channels must be 0 (first block) or tmp_channels'
        assert architecture in ['orig', 'skip', 'resnet'], f'architecture must be orig, skip or resnet, not {architecture!r}'
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture, self.use_fp16 = first_layer_idx, architecture, use_fp16
        self.channels_last = fp16_channels_last if use_fp16 else False
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        # Layers are numbered in creation order; count them as we go.
        self.num_layers = 0
        def next_trainable():
            trainable = (first_layer_idx + self.num_layers >= freeze_layers)
            self.num_layers += 1
            return trainable

        act = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if architecture == 'skip' or in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, trainable=next_trainable(), **act)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, trainable=next_trainable(), **act)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=2, resample_filter=resample_filter,
            trainable=next_trainable(), **act)
        if architecture == 'resnet': # linear 1x1 shortcut, no clamp
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, down=2, bias=False, resample_filter=resample_filter,
                channels_last=self.channels_last, trainable=next_trainable())

    def forward(self, x, img, force_fp32=False):
        dtype, memory_format = _block_formats(self.use_fp16, self.channels_last, force_fp32)
        res = self.resolution
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, res, res])
            x = x.to(dtype=dtype, memory_format=memory_format)

        # FromRGB: every block for 'skip', otherwise only the first.
        if self.architecture == 'skip' or self.in_channels == 0:
            misc.assert_shape(img, [None, self.img_channels, res, res])
            img = img.to(dtype=dtype, memory_format=memory_format)
            from_img = self.fromrgb(img)
            x = from_img if x is None else x + from_img
            img = None if self.architecture != 'skip' else upfirdn2d.downsample2d(img, self.resample_filter)

        if self.architecture == 'resnet': # both branches scaled by sqrt(1/2) to keep the variance
            shortcut = self.skip(x, gain=np.sqrt(0.5))
            x = shortcut.add_(self.conv1(self.conv0(x), gain=np.sqrt(0.5)))
        else:
            x = self.conv1(self.conv0(x))

        assert x.dtype == dtype
        return x, img

#----------------------------------------------------------------------------
# Minibatch standard deviation: per group of group_size samples, the std of every feature,
# averaged over channel slices and pixels, appended as num_channels extra feature maps.
# Sample i belongs to group i % (N / G), as in upstream.

@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        G = x.shape[0]
        if self.group_size is not None:
            with misc.suppress_tracer_warnings(): # as_tensor keeps the group size symbolic when tracing.
                G = torch.minimum(torch.as_tensor(self.group_size), torch.as_tensor(x.shape[0]))
        return torch.cat([x, _group_std_maps(x, G, self.num_channels)], dim=1)

# The extra feature maps: x viewed as [G, N/G, F, C/F, H, W]; the std over the G members of a group,
# averaged over each channel slice and all pixels, broadcast back to every sample and pixel.

def _group_std_maps(x, G, F):
    _, C, H, W = x.shape
    members = x.reshape(G, -1, F, C // F, H, W)
    deviation = members - members.mean(dim=0)
    std = deviation.square().mean(dim=0).add(1e-8).sqrt()   # [N/G, F, C/F, H, W]
    per_group = std.mean(dim=[2, 3, 4])                       # [N/G, F]
    return per_group.reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]

#----------------------------------------------------------------------------
# Discriminator head at 4x4: mbstd -> conv -> fc (the penultimate features) -> out, with the
# projection onto the label embedding cmap for a conditional D. Always fp32.

@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet',
            mbstd_group_size=4, mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        assert architecture in ['orig', 'skip', 'resnet'], f'architecture must be orig, skip or resnet, not {architecture!r}'
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels, self.architecture = img_channels, architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
        self.mbstd = None
        if mbstd_num_channels > 0:
            self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, conv_clamp=conv_clamp, activation=activation)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def features(self, x, img):
        """The penultimate features f = fc(...) [N, in_channels], float32."""
        res = self.resolution
        misc.assert_shape(x, [None, self.in_channels, res, res])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, res, res])
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.fc(x.flatten(1))

    def logits(self, f, cmap):
        """Output layer on the features, projected onto cmap when conditional: [N, 1]."""
        x = self.out(f)
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(1, keepdim=True).mul(1 / np.sqrt(self.cmap_dim))
        return x

    def forward(self, x, img, cmap, force_fp32=False):
        _ = force_fp32 # The epilogue always runs in fp32.
        x = self.logits(self.features(x, img), cmap)
        assert x.dtype == torch.float32
        return x

#----------------------------------------------------------------------------
# Discriminator: blocks b{res} ... b8, optional label mapping, epilogue b4.
# Extras over upstream (no new parameters or buffers): return_features=True also returns the
# epilogue's fc output, attend={res: fn} transforms the block output of that resolution for this call
# only (ASA's attention, kept out of D and its pickles), and last_layer(c) gives the effective weight
# and bias of the output layer.

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
            channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs={},
            mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [img_resolution >> k for k in range(self.img_resolution_log2 - 2)] # res, ..., 8
        channels = lambda res: _channels_at(channel_base, channel_max, res)
        fp16_resolution = _fp16_resolution(self.img_resolution_log2, num_fp16_res)
        # Label projection width: 0 for an unconditional D, else cmap_dim or the 4x4 channel count.
        cmap_dim = 0 if c_dim == 0 else (channels(4) if cmap_dim is None else cmap_dim)

        shared = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0 # global layer index, for Freeze-D
        for res in self.block_resolutions:
            block = DiscriminatorBlock(0 if res == img_resolution else channels(res), channels(res), channels(res // 2),
                resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs, **shared)
            self.add_module(f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0: # label-only mapping network (no z, no w_avg, no broadcast)
            self.mapping = MappingNetwork(c_dim=c_dim, z_dim=0, w_dim=cmap_dim, w_avg_beta=None, num_ws=None,
                **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels(4), resolution=4, cmap_dim=cmap_dim, **epilogue_kwargs, **shared)

    def _cmap(self, c):
        return self.mapping(None, c) if self.c_dim > 0 else None

    def forward(self, img, c, return_features=False, attend=None, **block_kwargs):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
            if attend and (res // 2) in attend:
                x = attend[res // 2](x)
        cmap = self._cmap(c)
        if not return_features:
            return self.b4(x, img, cmap)
        f = self.b4.features(x, img)
        return self.b4.logits(f, cmap), f

    def last_layer(self, c):
        """Effective output layer (w [N,C], b [N]) so that logits[:,0] == (features * w).sum(1) + b."""
        weight, bias = self.b4.out.effective_weight_and_bias(torch.float32) # [O,C], [O]
        if self.c_dim == 0:
            n = 1 if c is None else c.shape[0]
            return weight[0].unsqueeze(0).expand(n, -1), bias[0].expand(n)
        cmap = self._cmap(c) * (1 / np.sqrt(self.b4.cmap_dim)) # [N,O]
        return cmap @ weight, cmap @ bias

#----------------------------------------------------------------------------

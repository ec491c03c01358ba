"""ADA's differentiable augmentation pipe (Karras et al., "Training Generative Adversarial Networks
with Limited Data", NeurIPS 2020, Sec. 2.3 and Appendix B).

Drop-in for upstream's ``training.augment.AugmentPipe``: same constructor keywords, attribute names,
buffers (``p``, ``Hz_geom``, ``Hz_fbank``) and per-sample semantics, and the random numbers are
drawn in the same order. This file is embedded verbatim into snapshots and exec'd by upstream's
loader, so it imports only numpy, torch and upstream-existing torch_utils modules.
"""

import numpy as np
import torch
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------
# Daubechies' polynomial factorization (Ten Lectures on Wavelets, Sec. 6.1 and 8.1).
# |m0(w)|^2 = cos^2(w/2)^N * P(sin^2(w/2)), P(y) = sum_k C(N-1+k, k) y^k. Each root y of P
# gives a reciprocal pair of z roots; choosing one of each pair yields an orthogonal low-pass.

def _daubechies_root_groups(N):
    coefs = [1]
    for k in range(1, N):
        coefs.append(coefs[-1] * (N - 1 + k) // k)  # C(N-1+k, k), exact in integers.
    y_roots = np.roots(coefs[::-1])
    groups, done = [], np.zeros(len(y_roots), dtype=bool)
    for i, y in enumerate(y_roots):
        if done[i]:
            continue
        b = 2 - 4 * y                           # y = (2 - z - 1/z) / 4  <=>  z^2 - b z + 1 = 0
        z = (b + np.sqrt(b * b - 4 + 0j)) / 2
        done[i] = True
        if abs(y.imag) < 1e-9:                  # Real y: the pair (z, 1/z).
            groups.append(([z], [1 / z]))
        else:                                   # Complex y: take its conjugate y along.
            rest = [j for j in range(len(y_roots)) if not done[j]]
            done[min(rest, key=lambda j: abs(y_roots[j] - np.conj(y)))] = True
            groups.append(([z, np.conj(z)], [1 / z, np.conj(1 / z)]))
    return groups


def _lowpass_from_roots(N, roots):
    h = np.real(np.poly([-1.0] * N + list(roots)))
    return h * (np.sqrt(2) / h.sum())


def _phase_nonlinearity(h):
    # Squared residual of the unwrapped phase response from its least-squares line.
    w = np.linspace(0, np.pi, 256)[1:-1]
    phase = np.unwrap(np.angle(np.polyval(h[::-1], np.exp(-1j * w))))
    wc, pc = w - w.mean(), phase - phase.mean()
    return float(np.sum((pc - wc * (np.sum(wc * pc) / np.sum(wc * wc))) ** 2))

#----------------------------------------------------------------------------
# Symlet low-pass ("least asymmetric" Daubechies filter with N vanishing moments, 2N taps):
# the root choice with the most linear phase, oriented with its energy centre before the middle
# (as the common tables list sym6's decomposition filter; they list sym2 = db2 reversed).

_symlets = dict()  # N -> filter, computed once per process.

def symlet_lowpass(N):
    if N in _symlets:
        return _symlets[N].copy()
    groups = _daubechies_root_groups(N)
    candidates = []
    for bits in range(2 ** len(groups)):
        roots = [z for g, grp in enumerate(groups) for z in grp[(bits >> g) & 1]]
        candidates.append(_lowpass_from_roots(N, roots))
    h = min(candidates, key=_phase_nonlinearity)
    k = np.arange(h.size)
    early = np.sum(k * h * h) < (h.size - 1) / 2
    _symlets[N] = h if early else h[::-1].copy()
    return _symlets[N].copy()

#----------------------------------------------------------------------------
# Four-band filter bank for image-space filtering, built from a wavelet low-pass h:
# the band filters sum to a unit impulse. Row 0 is the coarsest low-pass, row 3 the finest band.

def wavelet_filter_bank(h, num_bands=4):
    h = np.asarray(h, dtype=np.float64)
    h_hi = h * (-1.0) ** np.arange(h.size)          # H(-z)
    lo2 = np.convolve(h, h[::-1]) / 2               # H(z) H(1/z) / 2: half-band low-pass
    hi2 = np.convolve(h_hi, h_hi[::-1]) / 2         # H(-z) H(-1/z) / 2: half-band high-pass
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1
    for band in range(1, num_bands):
        dilated = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        dilated[:, ::2] = bank                      # Insert zeros: the previous bands move an octave down.
        bank = np.stack([np.convolve(row, lo2) for row in dilated])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start:start + hi2.size] += hi2
    return bank

#----------------------------------------------------------------------------
# Batched homogeneous matrices. Each entry is a python number or a tensor of shape [N].
# One constant tensor per distinct number, expanded (not copied), then one stack: a handful of
# kernels per matrix instead of one per entry (on a GPU each launch costs CPU time).

def _batched_matrix(rows, ref):
    consts = {}
    def entry(e):
        if isinstance(e, torch.Tensor):
            return e
        if float(e) not in consts:
            consts[float(e)] = torch.full([1] * ref.ndim, float(e), dtype=ref.dtype, device=ref.device).expand(ref.shape)
        return consts[float(e)]
    entries = [entry(e) for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(ref.shape + (len(rows), len(rows[0])))


def translate2d(tx, ty):
    return _batched_matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale2d(sx, sy):
    return _batched_matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotate2d(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    return _batched_matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def translate3d(t):
    return _batched_matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def scale3d(s):
    return _batched_matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


def rotate3d(v, theta):
    # Rodrigues' rotation about the unit axis v (a python 3-vector) by theta [N].
    # R = c I + (1 - c) v v^T + s [v]x, written out entry by entry on the [N] angle tensors.
    axis = [float(a) for a in v]
    x, y, z = axis
    cross = [[0, -z, y], [z, 0, -x], [-y, x, 0]]           # [v]x, the cross-product matrix
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    rows = [[axis[i] * axis[j] * cc + (c if i == j else cross[i][j] * s) for j in range(3)] + [0] for i in range(3)]
    return _batched_matrix(rows + [[0, 0, 0, 1]], theta)


# Small constants built on the host and copied without waiting: torch.tensor(..., device=cuda)
# would wait for every kernel queued so far (a host sync) before copying.
def _const3(rows, device):
    return torch.tensor(rows, dtype=torch.float32).to(device, non_blocking=True)

#----------------------------------------------------------------------------
# Per-sample decisions and debug values.

def _gate(value, prob, identity, gate_shape, gen):
    # Keep `value` for samples whose U(0,1) draw is below `prob`; the others get the identity.
    fire = torch.rand(gate_shape, device=value.device, generator=gen) < prob
    return torch.where(fire, value, identity)


def _pct_uniform(pct):
    return pct * 2 - 1     # Percentile -> U(-1, 1).


def _pct_normal(pct):
    return torch.erfinv(pct * 2 - 1)

#----------------------------------------------------------------------------
# Geometric execution: reflect-pad, 2x upsample with the orthogonal low-pass, bilinear resampling
# by G_inv (output pixel -> input pixel, centred pixel coordinates), 2x downsample and crop.

def _geometric_padding(G_inv, width, height, support):
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = _const3([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], G_inv.device)
    src = (G_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)   # [xy, N*4] source positions.
    need = torch.cat([-src, src]).max(dim=1).values                  # [x0, y0, x1, y1]
    need = need + _const3([support * 2 - cx, support * 2 - cy] * 2, G_inv.device)
    need = need.max(torch.zeros(4, device=G_inv.device))
    need = need.min(_const3([width - 1, height - 1] * 2, G_inv.device))
    return [int(m) for m in need.ceil().to(torch.int32).tolist()]


def apply_geometric(images, G_inv, Hz_geom):
    N, C, H, W = images.shape
    device = images.device
    support = Hz_geom.shape[0] // 4
    mx0, my0, mx1, my1 = _geometric_padding(G_inv, W, H, support)
    images = torch.nn.functional.pad(input=images, pad=[mx0, mx1, my0, my1], mode='reflect')
    G_inv = _const3([[1, 0, (mx0 - mx1) / 2], [0, 1, (my0 - my1) / 2], [0, 0, 1]], device) @ G_inv

    # In the 2x upsampled grid, a centred coordinate u maps to 2u, and pixel centres shift by half a pixel.
    images = upfirdn2d.upsample2d(x=images, f=Hz_geom, up=2)
    up = _const3([[2, 0, -0.5], [0, 2, -0.5], [0, 0, 1]], device)
    up_inv = _const3([[0.5, 0, 0.25], [0, 0.5, 0.25], [0, 0, 1]], device)
    G_inv = up @ G_inv @ up_inv

    # affine_grid works in [-1, 1] coordinates of the output (uncropped) and input grids.
    out_h, out_w = (H + support * 2) * 2, (W + support * 2) * 2
    to_norm = _const3([[2 / images.shape[3], 0, 0], [0, 2 / images.shape[2], 0], [0, 0, 1]], device)
    from_norm = _const3([[out_w / 2, 0, 0], [0, out_h / 2, 0], [0, 0, 1]], device)
    G_inv = to_norm @ G_inv @ from_norm
    grid = torch.nn.functional.affine_grid(theta=G_inv[:, :2, :], size=[N, C, out_h, out_w], align_corners=False)
    images = grid_sample_gradfix.grid_sample(images, grid)
    return upfirdn2d.downsample2d(x=images, f=Hz_geom, down=2, padding=-support * 2, flip_filter=True)

#----------------------------------------------------------------------------
# Color execution: a 4x4 homogeneous matrix C per sample acting on RGB (grayscale: on luma).

def apply_color(images, C):
    shape = images.shape
    if shape[1] not in (1, 3):
        raise ValueError(f'AugmentPipe: images have {shape[1]} channels; color augmentation needs RGB (3) or L (1)')
    pixels = images.flatten(2)                                              # [N, C, H*W]
    if shape[1] == 3:
        linear, offset = C[:, :3, :3], C[:, :3, 3:]
        pixels = linear @ pixels + offset
    else: # grayscale: average the three output rows to get one luma row
        luma = C[:, :3, :].mean(dim=1, keepdim=True)                       # [N, 1, 4]
        pixels = pixels * luma[:, :, :3].sum(dim=2, keepdim=True) + luma[:, :, 3:]
    return pixels.reshape(shape)

#----------------------------------------------------------------------------
# Image-space filtering: band gains g [N, bands] -> one separable filter per sample.

def _reflect_pad(images, pad):
    # Reflect padding that also works when pad >= size (repeated reflection), for tiny images.
    if min(images.shape[2], images.shape[3]) < 2:
        return torch.nn.functional.pad(input=images, pad=[pad] * 4, mode='replicate')
    while pad > 0:
        step = min(pad, images.shape[2] - 1, images.shape[3] - 1)
        images = torch.nn.functional.pad(input=images, pad=[step] * 4, mode='reflect')
        pad -= step
    return images


def normalize_band_gains(t, expected_power):
    # Rescale so that the expected power under the 1/f-like spectrum is unchanged.
    return t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()


def apply_band_filter(images, gains, Hz_fbank):
    N, C, H, W = images.shape
    taps = (gains @ Hz_fbank).unsqueeze(1).repeat([1, C, 1]).reshape([N * C, 1, -1])
    pad = Hz_fbank.shape[1] // 2
    images = _reflect_pad(images.reshape([1, N * C, H, W]), pad)
    images = conv2d_gradfix.conv2d(input=images, weight=taps.unsqueeze(2), groups=N * C)
    images = conv2d_gradfix.conv2d(input=images, weight=taps.unsqueeze(3), groups=N * C)
    return images.reshape([N, C, H, W])

#----------------------------------------------------------------------------
# Cutout: zero an axis-aligned rectangle of relative size `size` [N, 2] centred at `center` [N, 2].

def cutout_mask(size, center, height, width):
    x = (torch.arange(width, device=size.device) + 0.5) / width
    y = (torch.arange(height, device=size.device) + 0.5) / height
    keep_x = (x[None, :] - center[:, 0:1]).abs() >= size[:, 0:1] / 2     # [N, W]
    keep_y = (y[None, :] - center[:, 1:2]).abs() >= size[:, 1:2] / 2     # [N, H]
    return (keep_x[:, None, :] | keep_y[:, :, None]).to(torch.float32)[:, None]   # [N, 1, H, W]

#----------------------------------------------------------------------------
# The pipe. Every op fires independently per sample with probability multiplier * p.

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    def __init__(self, xflip=0, rotate90=0, xint=0, xint_max=0.125, scale=0, rotate=0, aniso=0, xfrac=0,
            scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125, brightness=0, contrast=0, lumaflip=0, hue=0,
            saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1, imgfilter=0,
            imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1, noise=0, cutout=0, noise_std=0.1, cutout_size=0.5):
        super().__init__()
        self.register_buffer('p', torch.ones([])) # ADA's p: scales every op's probability below

        # Probability multipliers, one per op (0 disables it). An op fires with probability p * multiplier.
        fires = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso, xfrac=xfrac,
                     brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue, saturation=saturation,
                     imgfilter=imgfilter, noise=noise, cutout=cutout)
        # Strengths. *_std of scale/aniso/contrast/saturation/imgfilter are in log2 units; xint_max,
        # xfrac_std and cutout_size are fractions of the image side; rotate_max and hue_max of a full turn.
        strengths = dict(xint_max=xint_max, scale_std=scale_std, rotate_max=rotate_max, aniso_std=aniso_std,
                         xfrac_std=xfrac_std, brightness_std=brightness_std, contrast_std=contrast_std, hue_max=hue_max,
                         saturation_std=saturation_std, imgfilter_std=imgfilter_std, noise_std=noise_std,
                         cutout_size=cutout_size)
        for name, value in {**fires, **strengths}.items(): # plain float attributes, as pickles expect
            setattr(self, name, float(value))
        self.imgfilter_bands = list(imgfilter_bands) # gain multiplier per frequency band (4 bands)

        # Orthogonal low-pass for geometric resampling; filter bank for image-space filtering.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(list(symlet_lowpass(6))))
        self.register_buffer('Hz_fbank', torch.as_tensor(wavelet_filter_bank(symlet_lowpass(2)[::-1]), dtype=torch.float32))

    def forward(self, images, debug_percentile=None, generator=None):
        # generator: optional torch.Generator for every draw (ours only; upstream uses the global RNG).
        assert isinstance(images, torch.Tensor) and images.ndim == 4, 'AugmentPipe expects NCHW images'
        gen, pct = generator, None
        if debug_percentile is not None:
            pct = torch.as_tensor(debug_percentile, dtype=torch.float32, device=images.device)
        G_inv = self._sample_geometric(images.shape, images.device, pct, gen)
        if G_inv is not None:
            images = apply_geometric(images, G_inv, self.Hz_geom)
        C = self._sample_color(images.shape, images.device, pct, gen)
        if C is not None:
            images = apply_color(images, C)
        if self.imgfilter > 0:
            images = apply_band_filter(images, self._sample_band_gains(images.shape[0], images.device, pct, gen), self.Hz_fbank)
        if self.noise > 0:
            images = self._add_noise(images, pct, gen)
        if self.cutout > 0:
            images = self._cut_out(images, pct, gen)
        return images

    # Blit and geometric ops composed into one inverse matrix; None if none is enabled.
    def _sample_geometric(self, shape, device, pct, gen):
        N, _, H, W = shape
        G_inv = torch.eye(3, device=device).expand(N, 3, 3)
        enabled = False
        def compose(M):
            nonlocal G_inv, enabled
            G_inv, enabled = G_inv @ M, True
        if self.xflip > 0:
            i = _gate(torch.floor(torch.rand([N], device=device, generator=gen) * 2), self.xflip * self.p, 0.0, [N], gen)
            i = i if pct is None else torch.full_like(i, torch.floor(pct * 2))
            compose(scale2d(1 - 2 * i, torch.ones_like(i)))
        if self.rotate90 > 0:
            i = _gate(torch.floor(torch.rand([N], device=device, generator=gen) * 4), self.rotate90 * self.p, 0.0, [N], gen)
            i = i if pct is None else torch.full_like(i, torch.floor(pct * 4))
            compose(rotate2d(np.pi / 2 * i))
        if self.xint > 0:
            t = _gate((torch.rand([N, 2], device=device, generator=gen) * 2 - 1) * self.xint_max, self.xint * self.p, 0.0, [N, 1], gen)
            t = t if pct is None else torch.full_like(t, _pct_uniform(pct) * self.xint_max)
            compose(translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H)))
        if self.scale > 0:
            s = _gate(torch.exp2(torch.randn([N], device=device, generator=gen) * self.scale_std), self.scale * self.p, 1.0, [N], gen)
            s = s if pct is None else torch.full_like(s, torch.exp2(_pct_normal(pct) * self.scale_std))
            compose(scale2d(1 / s, 1 / s))
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))  # P(pre OR post) = rotate * p.
        if self.rotate > 0:
            theta = self._sample_rotation(N, device, p_rot, gen)
            theta = theta if pct is None else torch.full_like(theta, _pct_uniform(pct) * np.pi * self.rotate_max)
            compose(rotate2d(theta))
        if self.aniso > 0:
            s = _gate(torch.exp2(torch.randn([N], device=device, generator=gen) * self.aniso_std), self.aniso * self.p, 1.0, [N], gen)
            s = s if pct is None else torch.full_like(s, torch.exp2(_pct_normal(pct) * self.aniso_std))
            compose(scale2d(1 / s, s))
        if self.rotate > 0:
            theta = self._sample_rotation(N, device, p_rot, gen)
            theta = theta if pct is None else torch.zeros_like(theta)
            compose(rotate2d(theta))
        if self.xfrac > 0:
            t = _gate(torch.randn([N, 2], device=device, generator=gen) * self.xfrac_std, self.xfrac * self.p, 0.0, [N, 1], gen)
            t = t if pct is None else torch.full_like(t, _pct_normal(pct) * self.xfrac_std)
            compose(translate2d(-t[:, 0] * W, -t[:, 1] * H))
        return G_inv if enabled else None

    def _sample_rotation(self, N, device, p_rot, gen):
        theta = (torch.rand([N], device=device, generator=gen) * 2 - 1) * np.pi * self.rotate_max
        return _gate(theta, p_rot, 0.0, [N], gen)

    # Color ops composed into one 4x4 matrix (applied on the left); None if none is enabled.
    def _sample_color(self, shape, device, pct, gen):
        N, num_channels = shape[0], shape[1]
        C = torch.eye(4, device=device).expand(N, 4, 4)
        v = _const3([1, 1, 1, 0], device) / np.sqrt(3)  # Luma axis.
        vv = v[:, None] * v[None, :]
        enabled = False
        if self.brightness > 0:
            b = _gate(torch.randn([N], device=device, generator=gen) * self.brightness_std, self.brightness * self.p, 0.0, [N], gen)
            b = b if pct is None else torch.full_like(b, _pct_normal(pct) * self.brightness_std)
            C, enabled = translate3d(b) @ C, True
        if self.contrast > 0:
            c = _gate(torch.exp2(torch.randn([N], device=device, generator=gen) * self.contrast_std), self.contrast * self.p, 1.0, [N], gen)
            c = c if pct is None else torch.full_like(c, torch.exp2(_pct_normal(pct) * self.contrast_std))
            C, enabled = scale3d(c) @ C, True
        if self.lumaflip > 0:
            i = _gate(torch.floor(torch.rand([N, 1, 1], device=device, generator=gen) * 2), self.lumaflip * self.p, 0.0, [N, 1, 1], gen)
            i = i if pct is None else torch.full_like(i, torch.floor(pct * 2))
            C, enabled = (torch.eye(4, device=device) - 2 * vv * i) @ C, True   # reflect along the luma axis: brightness inverted, chroma kept
        if self.hue > 0 and num_channels > 1:
            theta = _gate((torch.rand([N], device=device, generator=gen) * 2 - 1) * np.pi * self.hue_max, self.hue * self.p, 0.0, [N], gen)
            theta = theta if pct is None else torch.full_like(theta, _pct_uniform(pct) * np.pi * self.hue_max)
            C, enabled = rotate3d([1 / np.sqrt(3)] * 3, theta) @ C, True
        if self.saturation > 0 and num_channels > 1:
            s = _gate(torch.exp2(torch.randn([N, 1, 1], device=device, generator=gen) * self.saturation_std), self.saturation * self.p, 1.0, [N, 1, 1], gen)
            s = s if pct is None else torch.full_like(s, torch.exp2(_pct_normal(pct) * self.saturation_std))
            C, enabled = (vv + (torch.eye(4, device=device) - vv) * s) @ C, True
        return C if enabled else None

    # Per-sample gains of the frequency bands, each band firing independently.
    def _sample_band_gains(self, N, device, pct, gen):
        num_bands = self.Hz_fbank.shape[0]
        if len(self.imgfilter_bands) != num_bands:
            raise ValueError(f'AugmentPipe: imgfilter_bands has {len(self.imgfilter_bands)} entries; it needs {num_bands}')
        expected_power = _const3([10, 1, 1, 1], device) / 13  # ~1/f spectrum.
        gains = torch.ones([N, num_bands], device=device)
        for band, band_strength in enumerate(self.imgfilter_bands):
            t_i = _gate(torch.exp2(torch.randn([N], device=device, generator=gen) * self.imgfilter_std), self.imgfilter * self.p * band_strength, 1.0, [N], gen)
            if pct is not None:
                t_i = torch.full_like(t_i, torch.exp2(_pct_normal(pct) * self.imgfilter_std)) if band_strength > 0 else torch.ones_like(t_i)
            t = torch.ones([N, num_bands], device=device)
            t[:, band] = t_i
            gains = gains * normalize_band_gains(t, expected_power)
        return gains

    def _add_noise(self, images, pct, gen):
        N = images.shape[0]
        sigma = _gate(torch.randn([N, 1, 1, 1], device=images.device, generator=gen).abs() * self.noise_std, self.noise * self.p, 0.0, [N, 1, 1, 1], gen)
        sigma = sigma if pct is None else torch.full_like(sigma, torch.erfinv(pct) * self.noise_std)
        return images + torch.randn(images.shape, device=images.device, generator=gen) * sigma

    def _cut_out(self, images, pct, gen):
        N, _, H, W = images.shape
        size = _gate(torch.full([N, 2], self.cutout_size, device=images.device), self.cutout * self.p, 0.0, [N, 1], gen)
        center = torch.rand([N, 2], device=images.device, generator=gen)
        if pct is not None:
            size = torch.full_like(size, self.cutout_size)
            center = torch.full_like(center, pct)
        return images * cutout_mask(size, center, H, W)

#----------------------------------------------------------------------------

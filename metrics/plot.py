"""Line plot of metric vs kimg as PNG bytes: matplotlib when installed, else drawn with Pillow
(matplotlib is not a dependency; the Pillow drawing keeps compare.py working everywhere).
Each series may carry a shaded band (e.g. the spread over seeds around a mean)."""

from __future__ import annotations

import io
import math

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]

#----------------------------------------------------------------------------
# series: [(label, [(x, y or None), ...]), ...] -> PNG bytes.
# bands: optional {label: [(x, lo, hi), ...]} shaded behind that label's line.

def line_plot_png(series: list, xlabel: str, ylabel: str, title: str, bands: dict | None = None) -> bytes:
    bands = {label: _finite_band(band) for label, band in (bands or {}).items()}
    try:
        import matplotlib
    except ImportError:
        return _pillow_plot(series, xlabel, ylabel, title, bands)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for label, points in series:
        pts = _finite(points)
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
        band = bands.get(label)
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', bbox_inches='tight')
    plt.close(fig)
    return buf.getvalue()

#----------------------------------------------------------------------------

def _finite(points):
    return [(float(x), float(y)) for x, y in points if isinstance(y, (int, float)) and math.isfinite(y)]


def _finite_band(band):
    ok = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
    return [(float(x), float(lo), float(hi)) for x, lo, hi in band if ok(lo) and ok(hi)]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list:
    """About `count` round tick values covering [lo, hi]."""
    span = hi - lo
    raw = span / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _range(values: list) -> tuple:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad

#----------------------------------------------------------------------------
# Fallback drawing: axes, round ticks, one coloured polyline with markers per series, legend.

def _pillow_plot(series, xlabel, ylabel, title, bands=None) -> bytes:
    from PIL import Image, ImageDraw, ImageFont
    W, H, left, right, top, bottom = 900, 520, 90, 230, 50, 60
    img = Image.new('RGB', (W, H), 'white')
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:   # Pillow < 10.1 has only the small bitmap font
        font = ImageFont.load_default()
    data = [(label, _finite(points)) for label, points in series]
    bands = bands or {}
    band_ys = [v for band in bands.values() for _x, lo, hi in band for v in (lo, hi)]
    x0, x1 = _range([p[0] for _, pts in data for p in pts])
    y0, y1 = _range([p[1] for _, pts in data for p in pts] + band_ys)
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)

    draw.rectangle([left, top, W - right, H - bottom], outline='black')
    for t in nice_ticks(x0, x1):
        draw.line([px(t), H - bottom, px(t), H - bottom + 5], fill='black')
        draw.text((px(t) - 10, H - bottom + 8), f'{t:g}', fill='black', font=font)
    for t in nice_ticks(y0, y1, 6):
        draw.line([left - 5, py(t), left, py(t)], fill='black')
        draw.line([left, py(t), W - right, py(t)], fill=(230, 230, 230))
        draw.text((5, py(t) - 6), f'{t:.4g}', fill='black', font=font)
    draw.text((left, 5), title, fill='black', font=font)
    draw.text(((left + W - right) / 2 - 15, H - 25), xlabel, fill='black', font=font)
    draw.text((5, top - 20), ylabel, fill='black', font=font)

    for i, (label, _pts) in enumerate(data):     # bands first, so that every line stays visible
        band = bands.get(label)
        tint = tuple(int(c + (255 - c) * 0.75) for c in PALETTE[i % len(PALETTE)])
        if band and len(band) > 1:
            draw.polygon([(px(x), py(hi)) for x, _lo, hi in band] + [(px(x), py(lo)) for x, lo, _hi in reversed(band)], fill=tint)
        elif band:      # one point: the band is a bar, offset a little per series so bars stay apart
            x, lo, hi = band[0]
            draw.line([px(x) + 6 * (i + 1), py(lo), px(x) + 6 * (i + 1), py(hi)], fill=tint, width=5)
    for i, (label, pts) in enumerate(data):
        color = PALETTE[i % len(PALETTE)]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for cx, cy in xy:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        ly = top + 10 + 18 * i
        draw.line([W - right + 15, ly + 6, W - right + 40, ly + 6], fill=color, width=3)
        draw.text((W - right + 45, ly), label[:28], fill='black', font=font)
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()

#----------------------------------------------------------------------------

"""Results of a quality benchmark: per-run and per-spec summaries, the markdown table, the
curves (mean over seeds, band = min..max over seeds) and the image grids.

Scores are {'kid', 'fd'} per (run, kimg); lower is better for both. KID is shown x 1e3.
"A difference beyond the seed spread" means the min..max ranges over seeds do not overlap.
"""

from __future__ import annotations

import io
import math

import numpy as np

KID_SCALE = 1e3

#----------------------------------------------------------------------------
# Pure summaries.

def run_summary(points: list) -> dict:
    """points: [(kimg, {'kid', 'fd'})] sorted by kimg -> best (and its kimg) and final of each metric."""
    out = {}
    for key in ('kid', 'fd'):
        valid = [(k, r[key]) for k, r in points if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if valid:
            best = min(valid, key=lambda kv: (kv[1], kv[0]))
            out.update({f'best_{key}': best[1], f'best_{key}_kimg': best[0], f'final_{key}': valid[-1][1], 'final_kimg': valid[-1][0]})
    return out


def spread(values: list) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max; None for no values."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return dict(mean=float(np.mean(values)), std=std, min=min(values), max=max(values), n=len(values))


def versus(a: dict, b: dict) -> dict:
    """a - b for two spreads, its standard error, and whether the seed ranges are disjoint."""
    if a is None or b is None:
        return None
    se = math.sqrt(a['std'] ** 2 / a['n'] + b['std'] ** 2 / b['n'])
    if a['n'] < 2 or b['n'] < 2:
        verdict = 'one seed: spread unknown'
    elif a['max'] < b['min']:
        verdict = 'better beyond the seed spread'
    elif a['min'] > b['max']:
        verdict = 'worse beyond the seed spread'
    else:
        verdict = 'within the seed spread'
    return dict(diff=a['mean'] - b['mean'], se=se, verdict=verdict)


def curve(runs_points: list, key: str) -> list:
    """[(kimg, mean, min, max)] over the runs (seeds) that have a value at that kimg."""
    by_kimg = {}
    for points in runs_points:
        for kimg, res in points:
            if isinstance(res.get(key), (int, float)) and math.isfinite(res[key]):
                by_kimg.setdefault(kimg, []).append(res[key])
    return [(k, float(np.mean(v)), min(v), max(v)) for k, v in sorted(by_kimg.items())]

#----------------------------------------------------------------------------
# Markdown.

def _ms(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    if s is None:
        return '-'
    if s['n'] == 1:
        return f'{s["mean"] * scale:.{digits}f}'
    return f'{s["mean"] * scale:.{digits}f} ± {s["std"] * scale:.{digits}f} [{s["min"] * scale:.{digits}f}–{s["max"] * scale:.{digits}f}]'


def _k(kimg) -> str:
    return '-' if kimg is None else f'{kimg:g}'


def spec_table(specs: dict) -> dict:
    """specs: {spec: [run summary per seed]} -> {spec: {field: spread}}."""
    fields = ('best_kid', 'final_kid', 'best_fd', 'final_fd', 'sec_per_kimg')
    return {spec: {f: spread([r.get(f) for r in rows]) for f in fields} for spec, rows in specs.items()}


def render_markdown(meta: dict, specs: dict, seeds_of: dict, curves: dict, baseline: str | None) -> str:
    """meta: header facts; specs: {spec: [per-seed summary dicts with 'seed' and 'sec_per_kimg']};
    curves: {spec: [(kimg, mean, min, max)]} of KID."""
    table = spec_table(specs)
    lines = [f'# Quality benchmark: {meta["data_name"]}', '',
             f'Detector: **{meta["detector_title"]}**. KID x 10³ and FD, lower is better, each against all '
             f'{meta["num_real"]} images of the data, from {meta["num_gen"]} generated images of G_ema per snapshot '
             f'(fixed latents).', '']
    lines += [f'- {k}: {v}' for k, v in meta['facts'].items()] + ['']
    lines += ['Cells: mean ± sample sd [min–max] over seeds. "kimg of best" lists each seed\'s.', '',
              '| --aug | seeds | best KID x10³ | kimg of best | final KID x10³ | best FD | final FD | s/kimg |',
              '|---|---|---|---|---|---|---|---:|']
    for spec, rows in specs.items():
        t = table[spec]
        best_kimgs = ','.join(_k(r.get('best_kid_kimg')) for r in rows)
        spk = f'{t["sec_per_kimg"]["mean"]:.0f}' if t['sec_per_kimg'] else '-'
        seeds = ','.join(str(s) for s in seeds_of[spec])
        lines.append(f'| {spec} | {seeds} | {_ms(t["best_kid"], KID_SCALE)} | {best_kimgs} | '
                     f'{_ms(t["final_kid"], KID_SCALE)} | {_ms(t["best_fd"])} | {_ms(t["final_fd"])} | {spk} |')
    if baseline in specs and len(specs) > 1:
        lines += ['', f'## Against `{baseline}`', '',
                  'Difference of the means (this − baseline; negative = better) ± its standard error; the verdict compares '
                  'the min–max ranges over seeds.', '',
                  '| --aug | Δ best KID x10³ | verdict | Δ final KID x10³ | verdict |', '|---|---|---|---|---|']
        for spec in specs:
            if spec == baseline:
                continue
            cells = []
            for field in ('best_kid', 'final_kid'):
                v = versus(table[spec][field], table[baseline][field])
                cells += [f'{v["diff"] * KID_SCALE:+.1f} ± {v["se"] * KID_SCALE:.1f}', v['verdict']] if v else ['-', '-']
            lines.append(f'| {spec} | ' + ' | '.join(cells) + ' |')
    kimgs = sorted({k for pts in curves.values() for k, *_ in pts})
    if kimgs:
        lines += ['', '## KID x10³ by kimg (mean [min–max] over seeds)', '',
                  '| kimg | ' + ' | '.join(f'`{s}`' for s in curves) + ' |', '|---:|' + '---|' * len(curves)]
        for kimg in kimgs:
            cells = []
            for pts in curves.values():
                hit = [p for p in pts if p[0] == kimg]
                cells.append(f'{hit[0][1] * KID_SCALE:.1f} [{hit[0][2] * KID_SCALE:.1f}–{hit[0][3] * KID_SCALE:.1f}]' if hit else '')
            lines.append(f'| {_k(kimg)} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Per seed', '', '| --aug | seed | best KID x10³ (kimg) | final KID x10³ (kimg) | best FD (kimg) | final FD | s/kimg |',
              '|---|---:|---|---|---|---|---:|']
    for spec, rows in specs.items():
        for r in rows:
            if 'best_kid' not in r:
                lines.append(f'| {spec} | {r["seed"]} | not scored yet | | | | |')
                continue
            spk = f'{r["sec_per_kimg"]:.0f}' if r.get('sec_per_kimg') else '-'
            lines.append(f'| {spec} | {r["seed"]} | {r["best_kid"] * KID_SCALE:.1f} ({_k(r["best_kid_kimg"])}) | '
                         f'{r["final_kid"] * KID_SCALE:.1f} ({_k(r["final_kimg"])}) | {r["best_fd"]:.1f} ({_k(r["best_fd_kimg"])}) | '
                         f'{r["final_fd"]:.1f} | {spk} |')
    return '\n'.join(lines) + '\n'

#----------------------------------------------------------------------------
# Pictures.

def curves_png(kid_curves: dict, fd_curves: dict, title: str) -> bytes:
    """KID (top) and FD (bottom) vs kimg: mean line per spec, band = min..max over seeds."""
    import PIL.Image
    from metrics import plot
    panels = []
    for name, curves, scale in (('KID x1e3', kid_curves, KID_SCALE), ('FD', fd_curves, 1.0)):
        series = [(spec, [(k, m * scale) for k, m, _lo, _hi in pts]) for spec, pts in curves.items()]
        bands = {spec: [(k, lo * scale, hi * scale) for k, _m, lo, hi in pts] for spec, pts in curves.items()}
        png = plot.line_plot_png(series, xlabel='kimg', ylabel=name, title=f'{name} vs kimg, {title}', bands=bands)
        panels.append(PIL.Image.open(io.BytesIO(png)).convert('RGB'))
    width = max(p.width for p in panels)
    out = PIL.Image.new('RGB', (width, sum(p.height for p in panels)), 'white')
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height
    buf = io.BytesIO()
    out.save(buf, format='PNG', optimize=True)
    return buf.getvalue()


def grid_png(rows: list, label_width: int = 170) -> bytes:
    """rows: [(label, uint8 [N, H, W, C])] -> one image row per entry with its label on the left."""
    import PIL.Image
    import PIL.ImageDraw
    import PIL.ImageFont
    h = max(imgs.shape[1] for _, imgs in rows)
    w = max(imgs.shape[0] * imgs.shape[2] for _, imgs in rows)
    out = PIL.Image.new('RGB', (label_width + w, h * len(rows)), 'white')
    draw = PIL.ImageDraw.Draw(out)
    font = PIL.ImageFont.load_default()
    for i, (label, imgs) in enumerate(rows):
        strip = np.concatenate(list(imgs), axis=1)
        if strip.shape[2] == 1:
            strip = np.repeat(strip, 3, axis=2)
        out.paste(PIL.Image.fromarray(strip, 'RGB'), (label_width, i * h))
        draw.text((4, i * h + max(h // 2 - 6, 0)), label[:28], fill='black', font=font)
    buf = io.BytesIO()
    out.save(buf, format='PNG', optimize=True)
    return buf.getvalue()

#----------------------------------------------------------------------------

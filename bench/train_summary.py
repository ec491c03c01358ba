"""One Markdown table from the JSON lines of bench/train.py (ours) and bench/upstream_train.py.

    python bench/train_summary.py gpu_check_out/steps/train-*.txt

Rows are (cfg, resolution, --aug methods; options such as ADA's target are dropped); columns give sec/kimg, process CPU sec/kimg and peak GPU memory
of both sides, ours/upstream, and each side's --aug cost relative to its own noaug run. Lines that
are not JSON objects (training logs) are ignored; a side or aug that did not run shows '-'.
"""

import json
import sys

def aug_key(spec):
    r"""Method names only, so that ours (`ada:bgc,target=0.6+asa`) pairs with upstream's `ada`."""
    return '+'.join(part.split(':')[0] for part in spec.split('+'))

def read_rows(paths):
    r"""{(side, cfg, res, aug): row} from every JSON line with sec_per_kimg in the given files."""
    rows = {}
    for path in paths:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                line = line.strip()
                if not line.startswith('{'):
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if 'sec_per_kimg' in row:
                    rows[(row.get('side', 'ours'), row['cfg'], row['res'], aug_key(row['aug']))] = row
    return rows

def _fmt(value, digits=1):
    return '-' if value is None else f'{value:.{digits}f}'

def table(rows):
    keys = sorted({(cfg, res, aug) for _side, cfg, res, aug in rows}, key=lambda k: (-k[1], k[0], k[2]))
    lines = ['| cfg | res | --aug | ours sec/kimg | upstream sec/kimg | ours / upstream | ours CPU sec/kimg | '
             'upstream CPU sec/kimg | ours vs own noaug | upstream vs own noaug | ours peak GB | upstream peak GB |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for cfg, res, aug in keys:
        ours, theirs = rows.get(('ours', cfg, res, aug)), rows.get(('upstream', cfg, res, aug))
        get = lambda row, key: row[key] if row else None  # noqa: E731
        def vs_noaug(side, row):
            base = rows.get((side, cfg, res, 'noaug'))
            return row['sec_per_kimg'] / base['sec_per_kimg'] if row and base else None
        ratio = ours['sec_per_kimg'] / theirs['sec_per_kimg'] if ours and theirs else None
        lines.append(f'| {cfg} | {res} | `{aug}` | {_fmt(get(ours, "sec_per_kimg"), 2)} | {_fmt(get(theirs, "sec_per_kimg"), 2)} | '
                     f'{_fmt(ratio, 2)} | {_fmt(get(ours, "cpu_sec_per_kimg"), 2)} | {_fmt(get(theirs, "cpu_sec_per_kimg"), 2)} | '
                     f'{_fmt(vs_noaug("ours", ours), 2)} | {_fmt(vs_noaug("upstream", theirs), 2)} | '
                     f'{_fmt(get(ours, "peak_gpu_mem_gb"), 2)} | {_fmt(get(theirs, "peak_gpu_mem_gb"), 2)} |')
    return '\n'.join(lines)

def main(paths):
    rows = read_rows(paths)
    if not rows:
        print('train summary: no measurements found in', ' '.join(paths) or '(no files)')
        return 0
    print(table(rows))
    plugins = sorted({f'{k[1]}/{k[3]}: {r["plugins"]}' for k, r in rows.items() if 'plugins' in r})
    if plugins:
        print('upstream ops:', '; '.join(plugins))
    return 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

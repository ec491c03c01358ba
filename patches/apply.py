"""Add --aug=<asa_plugin spec> to an unmodified NVlabs StyleGAN2-ADA or StyleGAN3 checkout.

    python patches/apply.py --upstream ~/stylegan2-ada-pytorch            # apply (idempotent)
    python patches/apply.py --upstream ~/stylegan2-ada-pytorch --revert   # restore the original files
    python patches/apply.py --upstream ~/stylegan2-ada-pytorch --check    # report the state only

What it does (see patches/README.md): installs training/asa_loss.py (a StyleGAN2Loss subclass that
routes D's inputs through asa_plugin), inserts two marked blocks into train.py (one routes the spec
to upstream's own options and the new loss, one widens the --aug option) and two into
training/training_loop.py (the plugin state saved beside each snapshot and restored by --resume),
and makes the smallest
edits that let the checkout run on today's PyTorch/Python/SciPy (patches/compat.py; skip them with
--no-compat). Every edit sits between marker lines, a replaced line kept behind `#|`, so --revert
gives back the files byte for byte.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

def _load_compat():
    # patches/ is no package: load compat.py beside this file under a name that cannot clash.
    import importlib.util
    spec = importlib.util.spec_from_file_location('asa_patches_compat', os.path.join(HERE, 'compat.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

compat_edits = _load_compat()
MARK_BEGIN = '# >>> asa_plugin patch (patches/apply.py; undo with --revert) >>>'
MARK_END = '# <<< asa_plugin patch <<<'
INSTALLED_TAG = "# Installed by asa_plugin's patches/apply.py"
LOSS_FILE = os.path.join('training', 'asa_loss.py')
KEPT = '#|'     # prefix of an original line kept inside a block, restored by --revert

#----------------------------------------------------------------------------
# The insertions per upstream flavour: (file, anchor line, lines inserted before it). Anchors
# are single lines of upstream's train.py, checked to occur exactly once.

_MAIN_HOOK = ('train.py', 'if __name__ == "__main__":',
              ['from training.asa_loss import widen_aug_option', 'widen_aug_option(main)'])

# The plugin state beside each snapshot, and restored on --resume (ASALoss.*_plugin_state).
_STATE_HOOKS = [
    ('training/training_loop.py', '    phases = []',
     ["if hasattr(loss, 'load_plugin_state'):", '    loss.load_plugin_state(resume_pkl)']),
    ('training/training_loop.py', '        # Evaluate metrics.',
     ["if snapshot_pkl is not None and rank == 0 and hasattr(loss, 'save_plugin_state'):",
      '    loss.save_plugin_state(snapshot_pkl)']),
]

FLAVOURS = {
    'stylegan2-ada': [
        ('train.py', "    if aug == 'ada':",
         ['from training.asa_loss import route_aug_spec',
          'aug, p, target, augpipe = route_aug_spec(args, aug, p, target, augpipe, UserError)']),
        _MAIN_HOOK,
        *_STATE_HOOKS,
    ],
    'stylegan3': [
        ('train.py', "    if opts.aug != 'noaug':",
         ['from training.asa_loss import route_aug_spec_sg3',
          'route_aug_spec_sg3(c, opts)']),
        _MAIN_HOOK,
        *_STATE_HOOKS,
    ],
}

#----------------------------------------------------------------------------
# Any reason not to touch the checkout; printed as one line, exit code 2.

class PatchError(Exception):
    pass

#----------------------------------------------------------------------------
# Pure text edits.

def strip_blocks(text: str, path: str = '') -> str:
    """Remove every marked block (marker lines included), putting back the lines it kept."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        bare = line.strip()
        if bare == MARK_BEGIN:
            if inside:
                raise PatchError(f'{path}: nested "{MARK_BEGIN}"; fix the file by hand or restore it from git')
            inside = True
        elif bare == MARK_END:
            if not inside:
                raise PatchError(f'{path}: "{MARK_END}" without a begin marker; fix by hand or restore from git')
            inside = False
        elif not inside:
            out.append(line)
        elif line.startswith(KEPT):
            out.append(line[len(KEPT):])
    if inside:
        raise PatchError(f'{path}: "{MARK_BEGIN}" without an end marker; fix by hand or restore from git')
    return ''.join(out)

#----------------------------------------------------------------------------
# The one insertion primitive: a marked block before a line that must occur exactly once.

def _find_once(lines: list, anchor: str) -> list:
    return [i for i, line in enumerate(lines) if line.rstrip('\r\n') == anchor]

def _block(anchor: str, eol: str, body: list, kept: list = ()) -> list:
    indent = anchor[:len(anchor) - len(anchor.lstrip())]
    return [indent + MARK_BEGIN + eol, *(KEPT + line for line in kept),
            *(indent + line + eol for line in body), indent + MARK_END + eol]

def insert_block(text: str, anchor: str, body: list, path: str = '') -> str:
    """Insert ``body`` (lines, indented like the anchor) between markers before the anchor line."""
    lines = text.splitlines(keepends=True)
    hits = _find_once(lines, anchor)
    if len(hits) != 1:
        raise PatchError(f'{path}: expected the line {anchor!r} exactly once, found it {len(hits)} times; '
                         f'is this an unmodified NVlabs checkout?')
    i = hits[0]
    eol = '\r\n' if lines[i].endswith('\r\n') else '\n'
    return ''.join(lines[:i] + _block(anchor, eol, body) + lines[i:])

def replace_line(text: str, original: str, body: list):
    """Replace the line ``original`` (found exactly once) by a marked block that keeps it behind
    KEPT; returns None when the line is not there once (the edit is then not needed)."""
    lines = text.splitlines(keepends=True)
    hits = _find_once(lines, original)
    if len(hits) != 1:
        return None
    i = hits[0]
    eol = '\r\n' if lines[i].endswith('\r\n') else '\n'
    return ''.join(lines[:i] + _block(original, eol, body, kept=[lines[i]]) + lines[i + 1:])

#----------------------------------------------------------------------------
# StyleGAN2-ADA or StyleGAN3, from the first anchor of each flavour.

def detect_flavour(train_text: str) -> str:
    clean = strip_blocks(train_text, 'train.py').splitlines()
    found = [name for name, edits in FLAVOURS.items() if edits[0][1] in clean]
    if len(found) != 1:
        raise PatchError('train.py: neither a StyleGAN2-ADA nor a StyleGAN3 train.py (anchor lines not found); '
                         '--upstream must be an unmodified NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3 checkout')
    return found[0]

#----------------------------------------------------------------------------
# patches/asa_loss.py with the asa_plugin location filled in.

def loss_module_text(asa_root: str) -> str:
    with open(os.path.join(HERE, 'asa_loss.py'), encoding='utf-8') as f:
        text = f.read()
    assert text.startswith(INSTALLED_TAG), 'patches/asa_loss.py must start with the install tag'
    return text.replace('ASA_PLUGIN_ROOT = None', f'ASA_PLUGIN_ROOT = {os.path.abspath(asa_root)!r}', 1)

#----------------------------------------------------------------------------
# File handling: nothing is written until every edit has been computed; writes are atomic.

def _read(path: str) -> str:
    with open(path, encoding='utf-8', newline='') as f:
        return f.read()

#----------------------------------------------------------------------------
# Temp file in the same folder, fsync, os.replace, original mode kept.

def _write_atomic(path: str, text: str) -> None:
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

#----------------------------------------------------------------------------
# The checkout must have the two files the patch relies on.

def _check_upstream(upstream: str) -> None:
    for rel in ['train.py', os.path.join('training', 'loss.py'), os.path.join('training', 'training_loop.py')]:
        if not os.path.isfile(os.path.join(upstream, rel)):
            raise PatchError(f'--upstream {upstream}: {rel} not found; point it at the root of an NVlabs checkout')

#----------------------------------------------------------------------------
# True for a training/asa_loss.py that apply.py wrote (tag on line 1).

def _ours(path: str) -> bool:
    return os.path.exists(path) and _read(path).startswith(INSTALLED_TAG)

#----------------------------------------------------------------------------
# Every file change of an apply or revert, computed before anything is written.

def plan(upstream: str, revert: bool, asa_root: str, compat: bool = True, report: list = None) -> dict:
    """{path: new text, or None to delete} for apply or revert. ``report`` collects one line per
    compatibility edit (made, or not needed)."""
    _check_upstream(upstream)
    changes = {}
    loss_path = os.path.join(upstream, LOSS_FILE)
    if os.path.exists(loss_path) and not _ours(loss_path):
        raise PatchError(f'{loss_path} exists and was not written by apply.py; refusing to touch it')
    texts = {}

    def text_of(rel):
        path = os.path.join(upstream, rel)
        if path not in texts:
            texts[path] = strip_blocks(_read(path), path)
        return path

    flavour = detect_flavour(_read(os.path.join(upstream, 'train.py')))
    for rel, anchor, body in FLAVOURS[flavour]:
        path = text_of(rel)
        if not revert:
            texts[path] = insert_block(texts[path], anchor, body, path)
    for edit in compat_edits.EDITS[flavour]:
        if not os.path.isfile(os.path.join(upstream, edit.rel)):
            continue
        path = text_of(edit.rel)
        if revert or not compat:
            continue
        new = replace_line(texts[path], edit.original, edit.new)
        if report is not None:
            report.append(f'  {edit!r}' if new is not None else f'  not needed: {edit!r}')
        texts[path] = texts[path] if new is None else new
    for path, text in texts.items():
        if text != _read(path):
            changes[path] = text
    if revert:
        if os.path.exists(loss_path):
            changes[loss_path] = None
    else:
        text = loss_module_text(asa_root)
        if not os.path.exists(loss_path) or _read(loss_path) != text:
            changes[loss_path] = text
    return changes

#----------------------------------------------------------------------------

def run(upstream: str, revert: bool = False, asa_root: str = os.path.dirname(HERE), check: bool = False,
        compat: bool = True, report: list = None) -> list:
    """Apply (or revert) the patch; returns the changed paths. With check, changes nothing."""
    changes = plan(upstream, revert, asa_root, compat, report)
    if check:
        return sorted(changes)
    for path, text in changes.items():
        if text is None:
            os.remove(path)
        else:
            _write_atomic(path, text)
    return sorted(changes)

#----------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--upstream', required=True, metavar='DIR', help='root of an NVlabs stylegan2-ada-pytorch or stylegan3 checkout')
    parser.add_argument('--revert', action='store_true', help='remove the patch again')
    parser.add_argument('--check', action='store_true', help='only report what would change (exit 1 if anything)')
    parser.add_argument('--no-compat', action='store_true', help="skip the edits for today's PyTorch/Python/SciPy (patches/compat.py)")
    parser.add_argument('--asa-root', default=os.path.dirname(HERE), metavar='DIR', help='checkout holding asa_plugin [default: this one]')
    opts = parser.parse_args(argv)
    report = []
    try:
        changed = run(os.path.abspath(opts.upstream), opts.revert, opts.asa_root, opts.check, not opts.no_compat, report)
    except PatchError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    verb = 'would change' if opts.check else ('reverted' if opts.revert else 'patched')
    print(f'{verb}: ' + (', '.join(os.path.relpath(p, opts.upstream) for p in changed) if changed else 'nothing (already done)'))
    if report:
        print('compatibility edits for current PyTorch/Python/SciPy (--no-compat skips them):', *report, sep='\n')
    return 1 if opts.check and changed else 0

if __name__ == '__main__':
    sys.exit(main())

#----------------------------------------------------------------------------

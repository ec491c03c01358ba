"""Comments and docs cite only this repository's own documents: every docs/<page>.md named in a
tracked file exists, and no file cites a design note that is not part of the repository."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTSIDE = re.compile(r'\b(COMPAT|METHODS|RESOURCES|STYLE)\.md\b|\.\./shared/')


def _tracked_text_files():
    try:
        names = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    return [n for n in names if n.endswith(('.py', '.md', '.txt', '.sh', '.ini'))]


def test_citations_stay_inside_the_repository():
    outside, missing = [], []
    for name in _tracked_text_files():
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path):
            continue
        text = open(path, encoding='utf-8', errors='replace').read()
        if name != 'tests/test_doc_references.py':
            outside += [f'{name}: {m.group(0)}' for m in OUTSIDE.finditer(text)]
        missing += [f'{name}: {page}' for page in set(re.findall(r'docs/[A-Za-z0-9_-]+\.md', text))
                    if not os.path.isfile(os.path.join(ROOT, page))]
    assert not outside, f'cites documents outside the repository (cite docs/ instead): {outside}'
    assert not missing, f'cites docs pages that do not exist: {missing}'

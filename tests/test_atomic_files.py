"""dnnlib.util's atomic writers, shared by checkpoints, metrics caches, dataset_tool, compare and the CLIs."""

import hashlib
import os

import pytest

from dnnlib import util

#----------------------------------------------------------------------------
# A failed write keeps the old file and leaves no temp file; a good one replaces it with the usual mode.

def test_atomic_file_commit_and_abort(tmp_path):
    path = str(tmp_path / 'options.json')
    util.atomic_write_text(path, 'old')
    with pytest.raises(RuntimeError):
        with util.AtomicFile(path, 'w', encoding='utf-8') as f:
            f.write('half of the new')
            raise RuntimeError('killed mid-write')
    assert open(path).read() == 'old' and os.listdir(tmp_path) == ['options.json']
    util.atomic_write_bytes(path, b'new')
    assert open(path, 'rb').read() == b'new' and os.listdir(tmp_path) == ['options.json']
    assert os.stat(path).st_mode & 0o777 == util.umask_mode(0o666)

#----------------------------------------------------------------------------
# A folder appears whole or not at all; it may only replace an empty folder.

def test_atomic_folder(tmp_path):
    dest = str(tmp_path / 'out')
    with util.AtomicFolder(dest) as tmp:
        open(os.path.join(tmp, 'a.txt'), 'w').write('a')
        assert not os.path.exists(dest)
    assert os.listdir(dest) == ['a.txt'] and os.listdir(tmp_path) == ['out']
    with pytest.raises(OSError):
        with util.AtomicFolder(dest) as tmp:
            open(os.path.join(tmp, 'b.txt'), 'w').write('b')
    assert os.listdir(dest) == ['a.txt'] and os.listdir(tmp_path) == ['out']

#----------------------------------------------------------------------------
# Appended lines stay parseable after a torn last line.

def test_append_line_closes_torn_line(tmp_path):
    path = str(tmp_path / 'stats.jsonl')
    util.append_line(path, '{"a": 1}')
    with open(path, 'a') as f:
        f.write('{"torn')
    util.append_line(path, '{"b": 2}\n')
    assert open(path).read().splitlines() == ['{"a": 1}', '{"torn', '{"b": 2}']
    assert util.sha256_file(path) == hashlib.sha256(open(path, 'rb').read()).hexdigest()

#----------------------------------------------------------------------------

"""Every tool's --help answers without importing torch (torch alone takes seconds to import)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the script as __main__ with --help and prints whether torch got imported.
PROBE = '''
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print("TORCH", "torch" in sys.modules)
'''


@pytest.mark.parametrize('script', ['train.py', 'generate.py', 'calc_metrics.py', 'compare.py', 'dataset_tool.py', 'demo.py'])
def test_help_does_not_import_torch(script):
    res = subprocess.run([sys.executable, '-c', PROBE, os.path.join(ROOT, script)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert 'Usage:' in res.stdout and res.stdout.strip().endswith('TORCH False'), res.stdout[-500:]

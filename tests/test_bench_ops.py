"""bench/ops.py runs on the CPU (reference only), and its bandwidth figures use the right model."""

import os
import sys

from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import ops as bench_ops                       # noqa: E402
from bench.gpu_bandwidth import spec_bandwidth_gbps      # noqa: E402


def test_cpu_smoke_run_prints_every_case_and_mode():
    result = CliRunner().invoke(bench_ops.main, ['--shape', '1x4x8', '--iters', '1', '--bandwidth', '50'])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.split()[:1] and line.split()[0] in
            {'bias_act', 'filter2d', 'upsample2d', 'downsample2d'}]
    assert len(rows) == len(bench_ops.CASES) * 3
    assert "'bias_act': 'ref: impl=ref requested'" in result.output


def test_bad_shape_and_cpu_half_are_refused_with_the_fix():
    result = CliRunner().invoke(bench_ops.main, ['--shape', '32x512'])
    assert result.exit_code != 0 and 'use NxCxR' in result.output
    result = CliRunner().invoke(bench_ops.main, ['--variant', 'fp16-cl'])
    assert result.exit_code != 0 and 'use --device=cuda' in result.output


def test_ideal_traffic_counts_each_pass():
    # upsample2d of a [1, 1, 4, 4] block: 4 input and 16 output elements per pass, fp16.
    _kind, case = bench_ops.CASES['upsample2d']
    _fn, in_shape, passes = case(1, 1, 4, 4, 'cpu')
    assert in_shape == [1, 1, 2, 2] and passes == (20, 20, 20)
    assert bench_ops.ideal_traffic(passes, 'fwd', 2) == 40
    assert bench_ops.ideal_traffic(passes, 'r1', 2) == 120
    _kind, case = bench_ops.CASES['bias_act lrelu c=256']
    assert case(2, 3, 4, 4, 'cpu')[2] == (192, 288, 288)


def test_spec_bandwidth_matches_whole_names_only():
    assert spec_bandwidth_gbps('NVIDIA H100 80GB HBM3') == 3350
    assert spec_bandwidth_gbps('NVIDIA H100 PCIe') == 2000
    assert spec_bandwidth_gbps('NVIDIA H200') == 4800
    assert spec_bandwidth_gbps('NVIDIA A100-SXM4-40GB') == 1555      # not the A10's 600
    assert spec_bandwidth_gbps('NVIDIA L40S') == 864                 # not the L4's 300
    assert spec_bandwidth_gbps('NVIDIA RTX A4000') is None           # unknown: --bandwidth

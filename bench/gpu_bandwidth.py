"""Peak DRAM bandwidth of common GPUs (vendor spec sheets, GB/s = 1e9 bytes/s), looked up by the
name torch reports, e.g. 'NVIDIA H100 80GB HBM3' or 'NVIDIA A100-SXM4-40GB'.

The figure is the ceiling for memory-bound kernels such as bias_act and upfirdn2d; bench/ops.py
prints the achieved GB/s next to it. Unknown GPUs return None (pass --bandwidth instead).
"""

import re

# Lower-case name fragment -> GB/s. A fragment matches as whole words ('a10' not in 'a100'); the
# first match wins, so the specific variants ('h100 pcie') precede the plain name ('h100').
SPEC_GBPS = [
    ('b200', 8000), ('gh200', 4000), ('h200', 4800),
    ('h100 nvl', 3900), ('h100 pcie', 2000), ('h100', 3350), ('h800 pcie', 2000), ('h800', 3350),
    ('a100-sxm4-80gb', 2039), ('a100 80gb pcie', 1935), ('a100-pcie-80gb', 1935), ('a100', 1555), ('a800', 2039),
    ('a10g', 600), ('a10', 600), ('a40', 696), ('a6000', 768),
    ('l40s', 864), ('l40', 864), ('l4', 300), ('t4', 320), ('v100', 900),
    ('rtx 4090', 1008), ('rtx 3090', 936),
]

def spec_bandwidth_gbps(device_name):
    r"""Spec DRAM bandwidth (GB/s) for a torch device name, or None if the GPU is not in the table."""
    name = device_name.lower()
    for fragment, gbps in SPEC_GBPS:
        if re.search(r'(?<![a-z0-9])' + re.escape(fragment) + r'(?![a-z0-9])', name):
            return float(gbps)
    return None

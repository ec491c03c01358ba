"""torch_utils/training_stats: a non-finite report must not poison later ticks."""

import math

import torch

from torch_utils import training_stats


def test_nonfinite_report_leaves_later_ticks_finite():
    collector = training_stats.Collector(regex='Test/poison')
    training_stats.report('Test/poison', torch.tensor([1.0, float('nan'), 3.0, float('inf')]))
    collector.update()
    assert collector.num('Test/poison') == 2 and collector.mean('Test/poison') == 2.0
    training_stats.report('Test/poison', torch.tensor([float('nan')]))
    collector.update()
    assert math.isfinite(collector.mean('Test/poison'))        # nothing finite: the previous tick's value is kept
    training_stats.report('Test/poison', torch.tensor([4.0, 6.0]))
    collector.update()
    assert collector.num('Test/poison') == 2 and collector.mean('Test/poison') == 5.0
    assert collector.std('Test/poison') == 1.0

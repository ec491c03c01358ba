"""Progress reports: the compact tick line (training/tick_report.py), progress lines (dnnlib/progress.py), downloads."""

import io

import torch

from dnnlib.progress import Progress, eta_seconds
from training import tick_report
from training.tick_report import TickReporter


def test_status_line_is_short_with_progress_and_eta(tmp_path, monkeypatch):
    monkeypatch.setattr(tick_report, 'impl_summary', lambda: 'ref: device=cpu')
    # training_stats keeps one global registry, whose order stats.jsonl follows: leave it untouched.
    monkeypatch.setattr(tick_report.training_stats, 'report0', lambda name, value: value)
    reporter = TickReporter(str(tmp_path), rank=1, device=torch.device('cpu'), start_time=0.0, total_kimg=20)
    first = reporter.status(0, 16, 0, 0.0, 10.0, 5.0, {'Progress/augment': 0.0})
    second = reporter.status(1, 4016, 16, 10.0, 60.0, 1.0, {'Progress/augment': 0.25, 'Progress/apa_p': 0.5, 'ASA/lambda': 0.3,
                                                            'ASA/q_fake': 3.1, 'ASA/trace_real': 15.5,
                                                            'ASA/q_max': 9.5})
    assert first.split()[:4] == ['tick', '0', 'kimg', '0.0/20'] and 'eta -' in first and 'ops ref: device=cpu' in first
    # 50 s for 4 kimg since the first tick: 15.984 kimg left at 12.5 s/kimg = 3m 20s.
    assert second.split()[:4] == ['tick', '1', 'kimg', '4.0/20'] and 'eta 3m 20s' in second
    assert 'augment 0.250' in second and 'apa_p 0.500' in second and 'lambda 0.300' in second and 'q_max 9.500' in second
    assert 'q_fake' not in second and 'trace_real' not in second   # diagnostics: stats.jsonl only
    assert 'ops' not in second and 'cpumem' not in second and len(second) < 145, second


def test_eta_at_the_average_pace():
    assert eta_seconds(done=10, total=20, elapsed=100) == 100
    assert eta_seconds(done=25, total=20, elapsed=100) == 0      # a last tick overshoots
    assert eta_seconds(done=0, total=20, elapsed=5) is None      # no pace yet
    assert eta_seconds(done=3, total=None, elapsed=5) is None    # unknown total


def test_progress_lines_throttled_with_eta():
    now = [0.0]
    out = io.StringIO()
    progress = Progress('generator features', 100, interval=10, file=out, clock=lambda: now[0])
    for done, t in [(10, 1), (20, 2), (50, 15), (60, 16), (100, 30)]:
        now[0] = t
        progress.update(done)
    assert out.getvalue().splitlines() == [
        'generator features: 10/100 (10%), 1s elapsed, eta 9s',
        'generator features: 50/100 (50%), 15s elapsed, eta 15s',
        'generator features: 100/100 (100%), 30s elapsed, done']


def test_download_progress_shows_rate_and_eta(capsys):
    from dnnlib import download
    download._progress(True, 'http://h/f.pkl', 50 << 20, 200 << 20, elapsed=10.0)
    download._progress(True, 'http://h/f.pkl', 200 << 20, 200 << 20, done=True, elapsed=40.0)
    assert capsys.readouterr().err == ('\rDownloading http://h/f.pkl ... 50.0 MB / 200.0 MB, 5.0 MB/s, eta 30s'
                                       '\rDownloading http://h/f.pkl ... 200.0 MB / 200.0 MB done\n')

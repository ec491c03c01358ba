"""train.py command line (dry runs) and training/config.py: run names, option order, presets, errors."""

import io
import json
import os
import re
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import train
from training import config

#----------------------------------------------------------------------------

def _make_zip(path, n=8, res=16, labels=True):
    rnd = np.random.RandomState(0)
    with zipfile.ZipFile(path, 'w') as zf:
        names = []
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(rnd.randint(0, 256, (res, res, 3), dtype=np.uint8)).save(buf, format='png')
            names.append(f'00000/img{i:08d}.png')
            zf.writestr(names[-1], buf.getvalue())
        zf.writestr('dataset.json', json.dumps({'labels': [[f, i % 3] for i, f in enumerate(names)] if labels else None}))
    return str(path)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return _make_zip(tmp_path_factory.mktemp('data') / 'tiny.zip')


def dry_run(outdir, *args):
    result = CliRunner().invoke(train.main, ['--outdir', str(outdir), '--dry-run', '--device', 'cpu', *args], catch_exceptions=False)
    return result.exit_code, result.output


def options_of(output):
    return json.loads(output[output.index('{'):output.index('\n}\n') + 2])


def setup(data, **kwargs):
    return config.setup_training_options(data=data, device='cpu', **kwargs)

#----------------------------------------------------------------------------
# Run folder names (docs/compatibility.md §1.4).

def test_run_dir_names(tmp_path, data):
    code, out = dry_run(tmp_path, '--data', data)
    assert code == 0, out
    assert options_of(out)['run_dir'] == os.path.join(str(tmp_path), '00000-tiny-auto1')
    args = ['--data', data, '--cond=1', '--subset=4', '--mirror=1', '--cfg=cifar', '--gamma=0.05', '--kimg=100', '--batch=16',
            '--aug=fixed', '--p=0.2', '--augpipe=bgcf', '--resume=ffhq256', '--freezed=2']
    code, out = dry_run(tmp_path, *args)
    assert code == 0, out
    assert os.path.basename(options_of(out)['run_dir']) == \
        '00000-tiny-cond-subset4-mirror-cifar-gamma0.05-kimg100-batch16-fixed-p0.2-bgcf-resumeffhq256-freezed2'
    assert os.listdir(tmp_path) == [] # a dry run creates nothing


def test_run_dir_ids_never_reuse(tmp_path, data):
    os.makedirs(tmp_path / '00007-old')
    os.makedirs(tmp_path / 'notes')
    assert config.next_run_dir(str(tmp_path), 'x') == os.path.join(str(tmp_path), '00008-x')
    first = config.make_run_dir(str(tmp_path), 'x')
    second = config.make_run_dir(str(tmp_path), 'x')
    assert os.path.basename(first) == '00008-x' and os.path.basename(second) == '00009-x'


def test_launch_writes_options_once(tmp_path, data, monkeypatch):
    launched = []
    monkeypatch.setattr(train, 'launch', lambda options, rank: launched.append(options))
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', data, '--cfg=tiny', '--device=cpu'], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = os.path.join(str(tmp_path), '00000-tiny-tiny')
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        saved = json.load(f)
    assert saved == launched[0] and saved['run_dir'] == run_dir and os.listdir(run_dir) == ['training_options.json']


def test_offline_detectors_fail_at_startup_not_dry_run(tmp_path, data, monkeypatch):
    # --metrics with no reachable detector: one-line error before any run folder exists;
    # --dry-run never looks for (or downloads) detectors.
    from metrics import detectors, metric_main
    calls = []
    def offline(metrics, **kwargs):
        calls.append(list(metrics))
        raise detectors.DetectorError('detector inception: cannot download; to work offline, set STYLEGAN_ASA_DETECTORS=FOLDER')
    monkeypatch.setattr(metric_main, 'prepare_detectors', offline)
    monkeypatch.setattr(train, 'launch', lambda options, rank: pytest.fail('launched despite missing detectors'))
    args = ['--outdir', str(tmp_path), '--data', data, '--cfg=tiny', '--device=cpu', '--metrics=fid50k_full']
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code != 0 and calls == [['fid50k_full']]
    assert '--metrics=fid50k_full: detector inception' in result.output and 'STYLEGAN_ASA_DETECTORS' in result.output
    assert os.listdir(tmp_path) == []
    assert CliRunner().invoke(train.main, args + ['--dry-run']).exit_code == 0 and len(calls) == 1

#----------------------------------------------------------------------------
# training_options.json: upstream's key order (docs/compatibility.md §2.1), then ours.

UPSTREAM_KEYS = ['num_gpus', 'image_snapshot_ticks', 'network_snapshot_ticks', 'metrics', 'random_seed', 'training_set_kwargs',
                 'data_loader_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs', 'total_kimg',
                 'batch_size', 'batch_gpu', 'ema_kimg', 'ema_rampup']
OUR_KEYS = ['aug_spec', 'kimg_per_tick', 'device', 'G_reg_interval', 'D_reg_interval', 'nonfinite', 'deterministic']


def test_key_order_default(data, monkeypatch):
    monkeypatch.setattr(config, 'usable_cpus', lambda: 8)  # upstream's default of 3 workers fits
    _desc, opts = setup(data)
    assert list(opts) == UPSTREAM_KEYS + ['ada_target', 'augment_kwargs', 'run_dir'] + OUR_KEYS
    assert list(opts['training_set_kwargs']) == ['class_name', 'path', 'use_labels', 'max_size', 'xflip', 'resolution']
    assert list(opts['G_kwargs']) == ['class_name', 'z_dim', 'w_dim', 'mapping_kwargs', 'synthesis_kwargs']
    assert list(opts['G_kwargs']['synthesis_kwargs']) == ['channel_base', 'channel_max', 'num_fp16_res', 'conv_clamp']
    assert list(opts['D_kwargs']) == ['class_name', 'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs', 'channel_base',
                                      'channel_max', 'num_fp16_res', 'conv_clamp']
    assert opts['data_loader_kwargs'] == dict(pin_memory=False, num_workers=3, prefetch_factor=2)
    assert opts['metrics'] == ['fid50k_full'] and opts['aug_spec'] == 'ada:bgc,target=0.6' and opts['kimg_per_tick'] == 4.0
    assert list(opts['augment_kwargs'])[1:] == ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness',
                                                'contrast', 'lumaflip', 'hue', 'saturation']


def test_key_order_everything(data):
    _desc, opts = setup(data, cond=True, subset=4, mirror=True, cfg='cifar', aug='fixed', p=0.2, augpipe='bgcfnc', resume='ffhq256',
                        freezed=2, fp32=True, nhwc=True, nobench=True, allow_tf32=True, workers=0, tick=0.5, seed=7)
    assert list(opts) == UPSTREAM_KEYS + ['augment_p', 'augment_kwargs', 'resume_pkl', 'ada_kimg', 'cudnn_benchmark',
                                          'allow_tf32', 'run_dir'] + OUR_KEYS
    assert opts['training_set_kwargs'] == dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                                               max_size=4, xflip=True, resolution=16, random_seed=7)
    assert list(opts['D_kwargs']) == ['class_name', 'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs', 'channel_base',
                                      'channel_max', 'num_fp16_res', 'conv_clamp', 'architecture']
    assert opts['D_kwargs']['block_kwargs'] == dict(freeze_layers=2, fp16_channels_last=True)
    assert opts['G_kwargs']['synthesis_kwargs']['fp16_channels_last'] is True
    assert opts['D_kwargs']['num_fp16_res'] == 0 and opts['D_kwargs']['conv_clamp'] is None
    assert list(opts['loss_kwargs']) == ['class_name', 'r1_gamma', 'pl_weight', 'style_mixing_prob']
    assert opts['data_loader_kwargs'] == dict(pin_memory=False, num_workers=0) # no prefetch_factor without workers
    assert opts['ada_kimg'] == 100 and opts['ema_rampup'] is None and opts['kimg_per_tick'] == 0.5
    assert opts['aug_spec'] == 'fixed:bgcfnc,p=0.2' and opts['augment_p'] == 0.2

#----------------------------------------------------------------------------
# Presets (docs/compatibility.md §1.1).

# gpus, res -> mb, batch_gpu, mbstd, channel_base, lr, gamma, ema (the worked table).
AUTO_TABLE = [
    (1, 32, 32, 32, 4, 16384, 0.0025, 0.0064, 10), (1, 64, 32, 32, 4, 16384, 0.0025, 0.0256, 10),
    (1, 128, 32, 32, 4, 16384, 0.0025, 0.1024, 10), (1, 256, 16, 16, 4, 16384, 0.0025, 0.8192, 5),
    (1, 512, 8, 8, 4, 32768, 0.0025, 6.5536, 2.5), (1, 1024, 4, 4, 4, 32768, 0.002, 52.4288, 1.25),
    (2, 256, 32, 16, 4, 16384, 0.0025, 0.4096, 10), (4, 512, 32, 8, 4, 32768, 0.0025, 1.6384, 10),
    (8, 256, 64, 8, 4, 16384, 0.0025, 0.2048, 20), (8, 512, 64, 8, 4, 32768, 0.0025, 0.8192, 20),
    (8, 1024, 32, 4, 4, 32768, 0.002, 6.5536, 10),
]


@pytest.mark.parametrize('gpus, res, mb, batch_gpu, mbstd, cbase, lr, gamma, ema', AUTO_TABLE)
def test_auto_table(gpus, res, mb, batch_gpu, mbstd, cbase, lr, gamma, ema):
    spec = config.auto_preset(res, gpus)
    assert (spec['mb'], spec['mb'] // spec['ref_gpus'], spec['mbstd'], spec['cbase'], spec['lrate'], spec['ema']) == \
        (mb, batch_gpu, mbstd, cbase, lr, ema)
    assert spec['gamma'] == pytest.approx(gamma, rel=1e-12) and spec['map'] == 2 and spec['ramp'] == 0.05


@pytest.mark.parametrize('cfg, kimg, mb, batch_gpu, mbstd, cbase, lr, gamma, ema, ramp, maps', [
    ('stylegan2', 25000, 32, 4, 4, 32768, 0.002, 10, 10, None, 8),
    ('paper256', 25000, 64, 8, 8, 16384, 0.0025, 1, 20, None, 8),
    ('paper512', 25000, 64, 8, 8, 32768, 0.0025, 0.5, 20, None, 8),
    ('paper1024', 25000, 32, 4, 4, 32768, 0.002, 2, 10, None, 8),
    ('cifar', 100000, 64, 32, 32, 32768, 0.0025, 0.01, 500, 0.05, 2),
    ('lowshot', 300, 8, 8, 4, 32768, 0.002, 10, 10, None, 2),   # DiffAugment's low_shot: fmaps 1, map 2
])
def test_fixed_presets(data, cfg, kimg, mb, batch_gpu, mbstd, cbase, lr, gamma, ema, ramp, maps):
    _desc, o = setup(data, cfg=cfg)
    assert (o['total_kimg'], o['batch_size'], o['batch_gpu'], o['D_kwargs']['epilogue_kwargs']['mbstd_group_size']) == (kimg, mb, batch_gpu, mbstd)
    assert o['G_kwargs']['synthesis_kwargs'] == dict(channel_base=cbase, channel_max=512, num_fp16_res=4, conv_clamp=256)
    assert o['D_kwargs']['channel_base'] == cbase and o['G_kwargs']['mapping_kwargs'] == dict(num_layers=maps)
    assert o['G_kwargs']['z_dim'] == o['G_kwargs']['w_dim'] == 512
    assert o['G_opt_kwargs'] == o['D_opt_kwargs'] == dict(class_name='torch.optim.Adam', lr=lr, betas=[0, 0.99], eps=1e-8)
    assert (o['loss_kwargs']['r1_gamma'], o['ema_kimg'], o['ema_rampup']) == (gamma, ema, ramp)


def test_tiny_preset(data):
    desc, o = setup(data, cfg='tiny', kimg=0.2, tick=0.1)
    assert desc == 'tiny-tiny-kimg0.2' and o['total_kimg'] == 0.2 and o['kimg_per_tick'] == 0.1
    assert (o['batch_size'], o['batch_gpu'], o['ema_kimg'], o['ema_rampup'], o['metrics']) == (16, 16, 2.5, 0.05, [])
    assert o['G_kwargs'] == dict(class_name='training.networks.Generator', z_dim=64, w_dim=64, mapping_kwargs=dict(num_layers=2),
                                 synthesis_kwargs=dict(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=None))
    assert o['D_kwargs']['epilogue_kwargs'] == dict(mbstd_group_size=4) and o['D_kwargs']['channel_max'] == 64
    assert o['G_opt_kwargs']['lr'] == 0.0025 and o['loss_kwargs']['r1_gamma'] == 0.05


def test_lowshot_preset_snapshots_and_gpus(data):
    desc, o = setup(data, cfg='lowshot')
    assert desc == 'tiny-lowshot' and o['image_snapshot_ticks'] == o['network_snapshot_ticks'] == 10
    assert setup(data, cfg='lowshot', snap=3)[1]['network_snapshot_ticks'] == 3    # an explicit --snap wins
    assert setup(data, cfg='tiny')[1]['network_snapshot_ticks'] == 50
    _desc, o = setup(data, cfg='lowshot', gpus=2)   # batch 8 whatever the GPU count: 4 per GPU on 2
    assert (o['batch_size'], o['batch_gpu']) == (8, 4)


def test_auto_end_to_end_and_batch_gpu(data):
    _desc, o = setup(data, gpus=2, batch=8, batch_gpu=2)
    assert (o['num_gpus'], o['batch_size'], o['batch_gpu']) == (2, 8, 2)
    assert o['loss_kwargs']['r1_gamma'] == pytest.approx(0.0002 * 16 ** 2 / 64) # mb = max(min(2*32, 64), 2)

#----------------------------------------------------------------------------
# --aug and --resume.

def test_aug_translation_and_specs(data):
    assert setup(data, aug='noaug')[1]['aug_spec'] == 'noaug'
    assert 'augment_kwargs' not in setup(data, aug='noaug')[1]
    desc, o = setup(data, aug='ada', target=0.7, augpipe='bg')
    assert desc.endswith('-ada-target0.7-bg') and o['aug_spec'].startswith('ada:bg') and 'target=0.7' in o['aug_spec']
    desc, o = setup(data, aug='diffaug:color,translation+asa')
    assert desc.endswith('-diffaug-color-translation+asa') and 'diffaug' in o['aug_spec'] and 'asa' in o['aug_spec']
    assert 'augment_kwargs' not in o and 'ada_target' not in o


def test_resume_preset_takes_architecture_from_pickle(data, capsys):
    _desc, o = setup(data, cfg='tiny', resume='ffhq256')
    err = capsys.readouterr().err
    assert 'WARNING' in err and 'G_kwargs.mapping_kwargs.num_layers: 2 -> 8' in err and 'resolution: dataset 16 != pickle 256' in err
    assert o['G_kwargs']['mapping_kwargs']['num_layers'] == 8 and o['G_kwargs']['z_dim'] == 512
    assert o['G_kwargs']['synthesis_kwargs']['channel_base'] == 16384 and o['D_kwargs']['channel_max'] == 512
    assert o['G_kwargs']['synthesis_kwargs']['num_fp16_res'] == 0 # numerics stay ours
    assert o['resume_pkl'].endswith('ffhq-res256-mirror-paper256-noaug.pkl')


def _tiny_snapshot():
    networks = pytest.importorskip('training.networks')
    G = networks.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=3),
                           synthesis_kwargs=dict(channel_base=512, channel_max=32))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=512, channel_max=32, architecture='orig')
    return dict(training_set_kwargs=None, G=G, D=D, G_ema=G, augment_pipe=None)


def test_resume_local_pickle_and_latest(tmp_path, data, capsys):
    checkpoint = pytest.importorskip('training.checkpoint')
    if not hasattr(checkpoint, 'save_checkpoint'):
        pytest.skip('training.checkpoint.save_checkpoint not available')
    run_dir = tmp_path / '00003-old'
    os.makedirs(run_dir)
    pkl = checkpoint.save_checkpoint(str(run_dir), 12000, _tiny_snapshot(), state=None)
    desc, o = setup(data, cfg='tiny', resume=pkl, outdir=str(tmp_path))
    err = capsys.readouterr().err
    assert desc.endswith('-resumecustom') and o['resume_pkl'] == pkl and 'resume_state' not in o and o['ada_kimg'] == 100
    assert 'G_kwargs.z_dim: 64 -> 32' in err and 'D_kwargs.architecture: <default> -> orig' in err
    assert (o['G_kwargs']['z_dim'], o['G_kwargs']['mapping_kwargs']['num_layers'], o['D_kwargs']['architecture']) == (32, 3, 'orig')
    pkl2 = checkpoint.save_checkpoint(str(run_dir), 16000, _tiny_snapshot(), state=dict(cur_nimg=16000))
    desc, o = setup(data, cfg='tiny', resume='latest', outdir=str(tmp_path))
    assert desc.endswith('-resumelatest') and o['resume_pkl'] == pkl2 and o['resume_state'].endswith('training-state-000016.pt')
    assert 'ada_kimg' not in o and o['ema_rampup'] == 0.05 # a continuation keeps the schedule
    assert list(o)[-3:] == ['resume_state', 'nonfinite', 'deterministic']


def test_merge_architecture():
    cfg = dict(z_dim=64, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, num_fp16_res=0))
    pkl = dict(z_dim=64, c_dim=5, img_resolution=256, mapping_kwargs=dict(num_layers=8),
               synthesis_kwargs=dict(channel_base=1024, num_fp16_res=4, architecture='orig'))
    diffs = config.merge_architecture(cfg, pkl, 'G_kwargs')
    assert diffs == ['G_kwargs.mapping_kwargs.num_layers: 2 -> 8', 'G_kwargs.synthesis_kwargs.architecture: <default> -> orig']
    assert cfg == dict(z_dim=64, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=1024, num_fp16_res=0, architecture='orig'))

#----------------------------------------------------------------------------
# Validation: one clear error naming the flag, and nothing created.

@pytest.mark.parametrize('args, match', [
    (['--gpus=3'], '--gpus.*power of two'),
    (['--gpus=2', '--batch=7'], '--batch.*divisible by --gpus=2'),
    (['--batch=16', '--batch-gpu=3'], '--batch-gpu.*not a multiple'),
    (['--p=0.2'], '--p.*only be specified with --aug=fixed'),
    (['--aug=fixed'], '--aug=fixed requires specifying --p'),
    (['--aug=fixed', '--p=1.5'], '--p.*between 0 and 1'),
    (['--aug=noaug', '--target=0.5'], '--target.*only be specified with --aug=ada'),
    (['--aug=noaug', '--augpipe=bgc'], '--augpipe.*cannot be specified with --aug=noaug'),
    (['--augpipe=xflip'], '--augpipe.*unknown preset "xflip"; choose one of blit'),
    (['--aug=nosuchmethod'], '--aug.*nosuchmethod'),
    (['--aug=ada:bgc+asa', '--p=0.1'], '--p.*method option'),
    (['--metrics=fid50k_full,nosuch'], '--metrics.*nosuch'),
    (['--subset=0'], '--subset.*between 1 and 8'),
    (['--kimg=0'], '--kimg.*positive'),
    (['--tick=0'], '--tick.*positive'),
    (['--snap=0'], '--snap.*at least 1'),
    (['--freezed=-1'], '--freezed.*non-negative'),
    (['--gamma=-1'], '--gamma.*non-negative'),
    (['--resume=/no/such.pkl'], '--resume.*no such file'),
    (['--resume=latest'], '--resume'),
])
def test_option_errors(tmp_path, data, args, match):
    code, out = dry_run(tmp_path / 'runs', '--data', data, *args)
    assert code != 0 and re.search(match, ' '.join(out.split())), out
    assert not os.path.exists(tmp_path / 'runs')


def test_data_errors(tmp_path):
    code, out = dry_run(tmp_path, '--data', str(tmp_path / 'missing.zip'))
    assert code != 0 and '--data' in out and 'missing.zip: no such file' in ' '.join(out.split())
    unlabeled = _make_zip(tmp_path / 'plain.zip', labels=False)
    code, out = dry_run(tmp_path, '--data', unlabeled, '--cond=1')
    assert code != 0 and '--cond' in out and 'has none' in out
    odd = _make_zip(tmp_path / 'odd.zip', res=12)
    code, out = dry_run(tmp_path, '--data', odd)
    assert code != 0 and 'power of two' in out


def test_workers_capped_by_cpu_count(data, monkeypatch, capsys):
    monkeypatch.setattr(config, 'usable_cpus', lambda: 2)
    assert setup(data)[1]['data_loader_kwargs']['num_workers'] == 2       # default 3 on 2 CPUs
    assert capsys.readouterr().err == ''                                # the default is capped silently
    assert setup(data, workers=16)[1]['data_loader_kwargs']['num_workers'] == 2
    assert '--workers=16 capped at 2' in capsys.readouterr().err
    assert setup(data, workers=1)[1]['data_loader_kwargs']['num_workers'] == 1
    assert setup(data, workers=0)[1]['data_loader_kwargs'] == dict(pin_memory=False, num_workers=0)
    monkeypatch.setattr(config, 'usable_cpus', lambda: 1)
    assert setup(data)[1]['data_loader_kwargs']['num_workers'] == 1


def test_unwritable_outdir(tmp_path, data):
    (tmp_path / 'file').write_text('x')
    code, out = dry_run(tmp_path / 'file' / 'runs', '--data', data)
    assert code != 0 and '--outdir' in out and 'not a writable folder' in ' '.join(out.split())


def test_default_dataset_message(tmp_path):
    code, out = dry_run(tmp_path, '--cfg=tiny')
    assert code == 0, out
    assert 'No --data given: using the embedded demo dataset' in out and 'emoji32.zip' in out
    assert os.path.basename(options_of(out)['run_dir']) == '00000-emoji32-tiny'


def test_deterministic_flag_forms(tmp_path, data):
    assert options_of(dry_run(tmp_path, '--data', data, '--deterministic')[1])['deterministic'] is True
    assert options_of(dry_run(tmp_path, '--data', data, '--deterministic=0')[1])['deterministic'] is False

#----------------------------------------------------------------------------

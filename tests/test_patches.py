"""patches/apply.py against synthetic upstream checkouts (skeleton files written here, not upstream
code): anchors, idempotence, byte-exact revert, refusals, the --aug routing and ASALoss phases."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'patches'))
import apply as patch_apply  # noqa: E402
from _call_order import EXPECTED  # noqa: E402

#----------------------------------------------------------------------------
# Skeletons: just enough of each upstream layout for the patch's anchors and the loss's base class.

SG2_TRAIN = '''\
"""Synthetic StyleGAN2-ADA-like train.py for tests."""
import json
import click

class UserError(Exception):
    pass

class Args(dict):
    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__

def setup_training_loop_kwargs(aug=None, p=None, target=None, augpipe=None):
    args = Args(loss_kwargs=Args(class_name='training.loss.StyleGAN2Loss'),
                D_opt_kwargs=Args(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8))
    if aug is None:
        aug = 'ada'
    if aug == 'ada':
        args.ada_target = 0.6
    elif aug == 'fixed':
        args.augment_p = p
    elif aug != 'noaug':
        raise UserError(f'unsupported --aug={aug}')
    if target is not None:
        args.ada_target = target
    args.augpipe = None if aug == 'noaug' else (augpipe or 'bgc')
    args.aug = aug
    return args

@click.command()
@click.option('--aug', type=click.Choice(['noaug', 'ada', 'fixed']))
def main(aug):
    try:
        print(json.dumps(setup_training_loop_kwargs(aug=aug)))
    except UserError as e:
        raise click.ClickException(str(e))

if __name__ == "__main__":
    main()
'''

SG3_TRAIN = '''\
"""Synthetic StyleGAN3-like train.py for tests."""
import json
import click

class EasyDict(dict):
    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__

@click.command()
@click.option('--aug', type=click.Choice(['noaug', 'ada', 'fixed']), default='ada')
@click.option('--p', type=float, default=0.2)
@click.option('--target', type=float, default=0.6)
def main(**kwargs):
    opts = EasyDict(kwargs)
    c = EasyDict(loss_kwargs=EasyDict(class_name='training.loss.StyleGAN2Loss'), D_opt_kwargs=EasyDict(lr=0.002))
    if opts.aug != 'noaug':
        c.augment_kwargs = EasyDict(class_name='training.augment.AugmentPipe')
        if opts.aug == 'ada':
            c.ada_target = opts.target
        if opts.aug == 'fixed':
            c.augment_p = opts.p
    print(json.dumps(c))

if __name__ == "__main__":
    main()
'''

SG2_LOSS = '''\
"""Synthetic StyleGAN2-ADA-like loss base for tests (same constructor and phase API)."""
import torch

class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        raise NotImplementedError()

class StyleGAN2Loss(Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        self.device, self.G_mapping, self.G_synthesis, self.D = device, G_mapping, G_synthesis, D
        self.augment_pipe, self.r1_gamma, self.pl_weight = augment_pipe, r1_gamma, pl_weight
        self.greg_calls = 0

    def run_G(self, z, c, sync):
        ws = self.G_mapping(z, c)
        return self.G_synthesis(ws), ws

    def run_D(self, img, c, sync):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        if phase in ('Greg', 'Gboth'):
            self.greg_calls += 1
'''

SG3_LOSS = '''\
"""Synthetic StyleGAN3-like loss base for tests (same constructor and phase API)."""
import torch

class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        raise NotImplementedError()

class StyleGAN2Loss(Loss):
    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0, pl_batch_shrink=2,
                 pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0):
        self.device, self.G, self.D, self.augment_pipe = device, G, D, augment_pipe
        self.r1_gamma, self.pl_weight = r1_gamma, pl_weight
        self.blur_init_sigma, self.blur_fade_kimg = blur_init_sigma, blur_fade_kimg
        self.greg_calls, self.blur_seen = 0, []

    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, c)
        return self.G.synthesis(ws), ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        self.blur_seen.append(blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase in ('Greg', 'Gboth'):
            self.greg_calls += 1
'''

SUPPORT = {
    'training/__init__.py': '',
    'torch_utils/__init__.py': '',
    'torch_utils/ops/__init__.py': '',
    'torch_utils/training_stats.py': 'reported = {}\ndef report(name, value):\n    reported.setdefault(name, []).append(value)\n    return value\n',
    'training/augment.py': ('import torch\nclass AugmentPipe(torch.nn.Module):\n    def __init__(self, **kwargs):\n'
                            '        super().__init__()\n        self.register_buffer("p", torch.ones([]))\n'),
    'torch_utils/ops/conv2d_gradfix.py': 'import contextlib\n@contextlib.contextmanager\ndef no_weight_gradients(disable=False):\n    yield\n',
    # The two lines of upstream's training loop the plugin-state hooks go before.
    'training/training_loop.py': ('import os\ndef training_loop(loss=None, resume_pkl=None, rank=0, run_dir=".", ticks=1):\n'
                                  '    phases = []\n    for tick in range(ticks):\n'
                                  '        snapshot_pkl = os.path.join(run_dir, f"network-snapshot-{tick:06d}.pkl")\n'
                                  '        open(snapshot_pkl, "wb").close()\n\n        # Evaluate metrics.\n'
                                  '        phases.append(snapshot_pkl)\n    return phases\n'),
    # Upstream modules that asa_plugin/augment_pipe.py imports (enough to import and build it).
    'torch_utils/persistence.py': 'def persistent_class(cls):\n    return cls\n',
    'torch_utils/ops/upfirdn2d.py': 'import torch\ndef setup_filter(f, **kwargs):\n    return torch.as_tensor(f, dtype=torch.float32)\n',
    'torch_utils/ops/grid_sample_gradfix.py': '',
}


def make_checkout(root, train_text):
    files = {'train.py': train_text, 'training/loss.py': SG3_LOSS if train_text is SG3_TRAIN else SG2_LOSS, **SUPPORT}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file() and '__pycache__' not in p.parts}

#----------------------------------------------------------------------------

@pytest.mark.parametrize('train_text, flavour', [(SG2_TRAIN, 'stylegan2-ada'), (SG3_TRAIN, 'stylegan3')], ids=['sg2', 'sg3'])
def test_apply_idempotent_and_revert_exact(tmp_path, train_text, flavour):
    root = make_checkout(tmp_path / 'up', train_text)
    before = snapshot(root)
    assert patch_apply.detect_flavour(train_text) == flavour
    assert patch_apply.main(['--upstream', str(root), '--check']) == 1
    assert patch_apply.main(['--upstream', str(root)]) == 0
    once = snapshot(root)
    assert 'training/asa_loss.py' in once and once['train.py'].count(patch_apply.MARK_BEGIN.encode()) == 2
    assert f"ASA_PLUGIN_ROOT = {ROOT!r}".encode() in once['training/asa_loss.py']
    assert patch_apply.main(['--upstream', str(root)]) == 0
    assert snapshot(root) == once                                   # idempotent
    assert patch_apply.main(['--upstream', str(root), '--check']) == 0
    assert patch_apply.main(['--upstream', str(root), '--revert']) == 0
    assert snapshot(root) == before                                 # byte-exact revert
    assert patch_apply.main(['--upstream', str(root), '--revert']) == 0


def test_apply_refuses_bad_checkouts(tmp_path, capsys):
    root = make_checkout(tmp_path / 'up', SG2_TRAIN.replace("    if aug == 'ada':", "    if aug in ('ada',):"))
    before = snapshot(root)
    assert patch_apply.main(['--upstream', str(root)]) == 2
    assert 'anchor lines not found' in capsys.readouterr().err
    assert snapshot(root) == before                                 # nothing written
    root = make_checkout(tmp_path / 'up2', SG2_TRAIN)
    (root / 'training/asa_loss.py').write_text('# somebody else\n')
    assert patch_apply.main(['--upstream', str(root)]) == 2
    assert 'not written by apply.py' in capsys.readouterr().err
    assert patch_apply.main(['--upstream', str(tmp_path / 'missing')]) == 2
    assert 'train.py not found' in capsys.readouterr().err
    with pytest.raises(patch_apply.PatchError, match='exactly once'):
        patch_apply.insert_block('a\nx\nx\n', 'x', ['y'])
    with pytest.raises(patch_apply.PatchError, match='without an end marker'):
        patch_apply.strip_blocks(patch_apply.MARK_BEGIN + '\nfoo\n')

#----------------------------------------------------------------------------
# Routing and ASALoss in a patched StyleGAN2-ADA-like skeleton, in a subprocess so that the
# skeleton's `training` and `torch_utils` packages do not clash with this repository's.

MODELS = textwrap.dedent('''
import torch
from training.asa_loss import ASALoss
torch.manual_seed(0)
N, R, C_DIM = 8, 16, 3

class Mapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8 + C_DIM, 8)
    def forward(self, z, c):
        return self.fc(torch.cat([z, c], 1))

class Synthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3 * R * R)
    def forward(self, ws):
        return torch.tanh(self.fc(ws)).reshape(-1, 3, R, R)

class DMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(C_DIM, 4)
    def forward(self, z, c):
        return self.fc(c)

class Block(torch.nn.Module):     # upstream's block API: (x, img) -> (x, img), conv1 sets the width
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 2, stride=2)
    def forward(self, x, img):
        return self.conv1(img), img

class D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = C_DIM, R, 3
        self.b16 = Block()
        self.conv = torch.nn.Conv2d(4, 4, 2, stride=2)
        self.b4 = torch.nn.Module()
        self.b4.fc = torch.nn.Linear(4 * 16, 6)
        self.b4.out = torch.nn.Linear(6, 4)
        self.b4.out.weight_gain, self.b4.out.bias_gain = 1.0, 1.0
        self.mapping = DMapping()
    def forward(self, img, c):
        x, img = self.b16(None, img)
        f = torch.nn.functional.leaky_relu(self.b4.fc(self.conv(x).flatten(1)), 0.2)
        return (self.b4.out(f) * self.mapping(None, c)).sum(1, keepdim=True) / 2

class Pipe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('p', torch.tensor(0.25))
        self.calls = 0
    def forward(self, img):
        self.calls += 1
        return img.flip(3)

''')

DRIVER = textwrap.dedent('''
    import json, math, os, sys
    import torch
    sys.path.insert(0, '.')
    import train
    from torch_utils import training_stats
    result = {}
    for spec in ['ada', 'diffaug+apa', 'ada:bgcfnc,target=0.7,interval=8+apa:shared_p', 'fixed:p=0.3+dag',
                 'diffaugg', 'ada:xflip+apa', 'ada+diffaug']:
        try:
            result[spec] = train.setup_training_loop_kwargs(aug=spec)
        except train.UserError as e:
            result[spec] = 'UserError: ' + str(e)
    result['widened'] = [p.type.name for p in train.main.params if p.name == 'aug'][0]

    exec(sys.argv[1])
    losses = {}
    for spec in ['apa:p=0.5,adaptive=false+diffaug+dag+asa', 'apa:shared_p+ada+dag']:
        Gm, Gs, d, pipe = Mapping(), Synthesis(), D(), Pipe()
        loss = ASALoss(device=torch.device('cpu'), G_mapping=Gm, G_synthesis=Gs, D=d, augment_pipe=pipe,
                       r1_gamma=1.0, aug_spec=spec, extra_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.01, betas=[0, 0.99]))
        heads0 = loss.stack.get('dag').head_weight.detach().clone()
        out = {'methods': [m.name for m in loss.stack.methods], 'grads': {}}
        c = torch.eye(C_DIM)[torch.arange(N) % C_DIM]
        for it in range(2):
            for phase, nets in [('Gmain', [Gm, Gs]), ('Greg', [Gm, Gs]), ('Dmain', [d]), ('Dreg', [d])]:
                for net in nets:
                    net.zero_grad(set_to_none=True)
                loss.accumulate_gradients(phase=phase, real_img=torch.rand(N, 3, R, R) * 2 - 1, real_c=c,
                                          gen_z=torch.randn(N, 8), gen_c=c, sync=True, gain=1)
                grads = [p.grad for net in nets for p in net.parameters() if p.grad is not None]
                out['grads'][phase] = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
        out['greg_calls'] = loss.greg_calls
        out['heads_moved'] = float((loss.stack.get('dag').head_weight - heads0).abs().max())
        out['apa_p'] = loss.stack.get('apa').p
        out['pipe_calls'] = pipe.calls
        out['nimg'] = loss.cur_nimg
        result[spec] = out
        losses[spec] = loss
    result['reported'] = sorted(training_stats.reported)

    # Plugin state beside the snapshot, through the hooks apply.py put into the training loop.
    import tempfile
    from training.training_loop import training_loop
    def same(a, b):
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, torch.Tensor):
            return bool(torch.equal(a, b))
        return a == b or (a != a and b != b)     # NaN (a controller's 'no measurement yet') equals NaN
    spec = 'apa:p=0.5,adaptive=false+diffaug+dag+asa'
    trained = losses[spec]
    snap = training_loop(loss=trained, run_dir=tempfile.mkdtemp())[0]
    fresh, other = [ASALoss(device=torch.device('cpu'), G_mapping=Mapping(), G_synthesis=Synthesis(), D=D(), augment_pipe=None,
                            r1_gamma=1.0, aug_spec=s) for s in [spec, 'diffaug']]
    for loss in [fresh, other]:
        training_loop(loss=loss, resume_pkl=snap, run_dir=tempfile.mkdtemp())
    result['state'] = dict(file=os.path.basename(snap)[:-4] + '.asa_plugin.pt' in os.listdir(os.path.dirname(snap)),
                           restored=same(trained.stack.plugin_state(), fresh.stack.plugin_state()),
                           opt=same(trained.extra_opt.state_dict(), fresh.extra_opt.state_dict()),
                           nimg=fresh.cur_nimg == trained.cur_nimg > 0, other_nimg=other.cur_nimg)

    # The plugin call order of the shared host sequence (tests/_call_order.py), and D free of hooks.
    import copy, pickle
    from training import asa_loss
    asa_plugin = asa_loss.import_asa_plugin()
    sys.path.append(sys.argv[2])
    import _call_order
    asa_plugin.register_augment('recorder')(_call_order.Recorder)
    Gm, Gs, d = Mapping(), Synthesis(), D()
    loss = ASALoss(device=torch.device('cpu'), G_mapping=Gm, G_synthesis=Gs, D=d, augment_pipe=None, r1_gamma=1.0, aug_spec='recorder')
    rec, c, result['calls'] = loss.stack.get('recorder'), torch.eye(C_DIM)[torch.arange(N) % C_DIM], {}
    for phase in _call_order.EXPECTED:
        rec.calls.clear()
        loss.accumulate_gradients(phase=phase, real_img=torch.rand(N, 3, R, R) * 2 - 1, real_c=c, gen_z=torch.randn(N, 8),
                                  gen_c=c, sync=True, gain=1)
        result['calls'][phase] = list(rec.calls)
    # CBAM through the patched loss: a block hook for the duration of one D call only.
    loss = ASALoss(device=torch.device('cpu'), G_mapping=Gm, G_synthesis=Gs, D=d, augment_pipe=None, r1_gamma=1.0,
                   aug_spec='asa:attention=true,attention_res=8')
    img = torch.rand(N, 3, R, R) * 2 - 1
    logits, _ = loss._D(img, c, augment=False)
    logits.sum().backward()
    result['attention'] = dict(changed=not torch.allclose(logits, d(img, c)),
                               cbam_grads=all(p.grad is not None for p in loss.stack.extra_parameters('D')))
    blob = pickle.dumps(copy.deepcopy(d))
    result['D_hooks'] = sum(len(m._forward_hooks) for m in d.modules())
    result['D_pickle_names_plugin'] = b'asa_loss' in blob or b'asa_plugin' in blob or b'Recorder' in blob
    print(json.dumps(result))
''')


#----------------------------------------------------------------------------
# Patches a synthetic checkout, runs a driver in it (without our repo on PYTHONPATH), returns its JSON.

def _run_patched(tmp_path, train_src: str, driver: str) -> dict:
    root = make_checkout(tmp_path / 'up', train_src)
    assert patch_apply.main(['--upstream', str(root)]) == 0
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([sys.executable, '-c', driver, MODELS, os.path.join(ROOT, 'tests')], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_patched_sg2_skeleton_routes_and_trains(tmp_path):
    r = _run_patched(tmp_path, SG2_TRAIN, DRIVER)

    assert r['widened'] == 'text'
    assert r['ada']['loss_kwargs']['class_name'] == 'training.loss.StyleGAN2Loss' and r['ada']['ada_target'] == 0.6
    assert r['diffaug+apa']['aug'] == 'noaug'
    assert r['diffaug+apa']['loss_kwargs'] == {'class_name': 'training.asa_loss.ASALoss', 'aug_spec': 'apa+diffaug',
                                               'extra_opt_kwargs': {'class_name': 'torch.optim.Adam', 'lr': 0.002,
                                                                    'betas': [0, 0.99], 'eps': 1e-08}}
    shared = r['ada:bgcfnc,target=0.7,interval=8+apa:shared_p']
    assert shared['aug'] == 'ada' and shared['ada_target'] == 0.7 and shared['augpipe'] == 'bgcfnc' and shared['ada_interval'] == 8
    assert shared['loss_kwargs']['aug_spec'] == 'apa:shared_p+ada:bgcfnc,target=0.7,interval=8'
    assert r['fixed:p=0.3+dag']['aug'] == 'fixed' and r['fixed:p=0.3+dag']['augment_p'] == 0.3
    assert 'Did you mean "diffaug"' in r['diffaugg']
    assert 'takes a preset' in r['ada:xflip+apa']
    assert 'both augment every image' in r['ada+diffaug']

    full = r['apa:p=0.5,adaptive=false+diffaug+dag+asa']
    assert full['methods'] == ['apa', 'diffaug', 'dag', 'asa']
    assert full['grads'] == {'Gmain': True, 'Greg': False, 'Dmain': True, 'Dreg': True}    # Greg: the stub's
    assert full['greg_calls'] == 2 and full['heads_moved'] > 0 and full['apa_p'] == 0.5
    assert full['nimg'] == 8    # the stack's update runs when the next G phase starts
    shared = r['apa:shared_p+ada+dag']
    assert shared['methods'] == ['apa', 'dag'] and shared['apa_p'] == 0.25 and shared['pipe_calls'] > 0
    for key in ['Loss/signs/real', 'Loss/r1_penalty', 'Loss/G/loss', 'Progress/apa_p']:
        assert key in r['reported']
    assert r['calls'] == EXPECTED                     # the same sequence as training/loss.py (tests/test_loss.py)
    assert r['D_hooks'] == 0 and not r['D_pickle_names_plugin']
    assert r['attention'] == dict(changed=True, cbam_grads=True)
    assert r['state'] == dict(file=True, restored=True, opt=True, nimg=True, other_nimg=0)   # other spec: fresh


SG3_DRIVER = textwrap.dedent('''
    import contextlib, io, json, sys
    import click
    sys.path.insert(0, '.')
    import train
    runs = {}
    for spec in ['ada:target=0.7+apa', 'diffaug', 'ada:bgcfnc', 'noaug']:
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                train.main([f'--aug={spec}'], standalone_mode=False)
            runs[spec] = json.loads(buf.getvalue())
        except click.ClickException as e:
            runs[spec] = 'error: ' + e.format_message()
    exec(sys.argv[1])
    G = torch.nn.Module()
    G.mapping, G.synthesis = Mapping(), Synthesis()
    d = D()
    loss = ASALoss(device=torch.device('cpu'), G=G, D=d, augment_pipe=None, r1_gamma=1.0, pl_weight=2,
                   blur_init_sigma=2, blur_fade_kimg=0.016, aug_spec='apa:p=0.5,adaptive=false+diffaug+dag')
    c = torch.eye(C_DIM)[torch.arange(N) % C_DIM]
    grads = {}
    for phase, nets in [('Gmain', [G]), ('Greg', [G]), ('Dmain', [d]), ('Dreg', [d]), ('Gmain', [G])]:
        for net in nets:
            net.zero_grad(set_to_none=True)
        loss.accumulate_gradients(phase=phase, real_img=torch.rand(N, 3, R, R) * 2 - 1, real_c=c, gen_z=torch.randn(N, 8),
                                  gen_c=c, gain=1, cur_nimg=8)
        gs = [p.grad for net in nets for p in net.parameters() if p.grad is not None]
        grads[phase] = bool(gs) and sum(float(g.abs().sum()) for g in gs) > 0
    runs['loss'] = dict(flavour=loss.flavour, grads=grads, greg_calls=loss.greg_calls, nimg=loss.cur_nimg,
                        blur=sorted(set(loss.blur_seen)))
    print(json.dumps(runs))
''')


def test_patched_sg3_skeleton_routes(tmp_path):
    runs = _run_patched(tmp_path, SG3_TRAIN, SG3_DRIVER)
    c = runs['ada:target=0.7+apa']
    assert c['ada_target'] == 0.7 and c['loss_kwargs']['aug_spec'] == 'apa+ada:target=0.7'
    c = runs['diffaug']
    assert 'augment_kwargs' not in c and c['loss_kwargs']['class_name'] == 'training.asa_loss.ASALoss'
    assert 'always uses the bgc pipe' in runs['ada:bgcfnc']
    assert runs['noaug']['loss_kwargs'] == {'class_name': 'training.loss.StyleGAN2Loss'}
    loss = runs['loss']
    assert loss['flavour'] == 'sg3' and loss['greg_calls'] == 1 and loss['nimg'] == 8
    assert loss['grads'] == {'Gmain': True, 'Greg': False, 'Dmain': True, 'Dreg': True}
    assert loss['blur'] == [1.0]    # upstream's fade: sigma 2 at 0 kimg, 0 at 0.016 kimg -> 1 at 8 images


#----------------------------------------------------------------------------

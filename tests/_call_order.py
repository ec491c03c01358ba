"""The loss-side order of plugin calls, checked against both hosts: training/loss.py
(tests/test_loss.py) and the patched upstream loss (tests/test_patches.py)."""

from asa_plugin.base import AugmentMethod

#----------------------------------------------------------------------------
# Records every hook call; mixes reals by adding fakes*0 (keeps values, changes the tensor).

class Recorder(AugmentMethod):
    needs_features = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def augment(self, img, c):
        self.calls.append('augment')
        return img * 1.0

    def mix_reals(self, real_img, real_c, gen_fn):
        self.calls.append('mix_reals')
        gen_img, _gen_c = gen_fn()
        return real_img + gen_img * 0, real_c

    def observe_real_logits(self, logits):
        self.calls.append('observe_real_logits')

    def observe_features(self, features, c, kind):
        assert not features.requires_grad
        self.calls.append(f'observe_features:{kind}')

    def adjust_logits(self, logits, features, c, target, phase):
        assert features is not None
        self.calls.append(f'adjust_logits:{target}:{phase}')
        return logits

    def extra_loss(self, phase, run_D, real_img, real_c, gen_img, gen_c):
        self.calls.append(f'extra_loss:{phase}')
        return None

#----------------------------------------------------------------------------
# The order asa_plugin/host.py gives every host, phase by phase.

EXPECTED = {
    'Gmain': ['augment', 'adjust_logits:real:Gmain', 'extra_loss:Gmain'],
    'Greg':  ['extra_loss:Greg'],
    'Dmain': ['augment', 'observe_features:fake', 'adjust_logits:fake:Dmain',
              'mix_reals', 'augment', 'observe_real_logits', 'observe_features:real', 'adjust_logits:real:Dmain', 'extra_loss:Dmain'],
    'Dreg':  ['mix_reals', 'augment', 'observe_real_logits', 'extra_loss:Dreg'],
}

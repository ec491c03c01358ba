"""Adding a method touches only its own file (plus one import line): the generic layer (spec
grammar and rules, stack order and chaining) works from the facts a method class declares."""

import ast
import importlib.util
import os

import pytest
import torch

import asa_plugin
from asa_plugin import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERIC = ['asa_plugin/spec.py', 'asa_plugin/stack.py', 'asa_plugin/base.py', 'asa_plugin/registry.py']

# A complete new method, as its author would write it in asa_plugin/<name>.py.
NEW_METHOD = '''
import torch
from asa_plugin.base import AugmentMethod
from asa_plugin.registry import register_augment

@register_augment('negate')
class Negate(AugmentMethod):
    stage = 25                  # after the ADA pipe, before DAG's heads
    image_space = True

    def __init__(self, p: float = 1.0):
        super().__init__()
        self.check_options(dict(p=p))
        self.p = p

    @classmethod
    def check_options(cls, options):
        if not 0 <= options.get('p', 1.0) <= 1:
            raise ValueError(f'p={options["p"]} is outside [0, 1]')

    @classmethod
    def shares_image_space(cls, options):
        return True             # may follow another image-space method

    def augment(self, img, c):
        return -img if self.p > 0 else img
'''


@pytest.fixture
def new_method(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, '_registry', dict(registry._registry))  # registration undone after the test
    path = tmp_path / 'negate.py'
    path.write_text(NEW_METHOD)
    spec = importlib.util.spec_from_file_location('negate_method', path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))          # the "one import line"
    return 'negate'


def test_new_method_is_ordered_validated_and_chained(new_method):
    assert new_method in asa_plugin.list_augments()
    assert asa_plugin.validate_spec('dag+negate:p=0.5+apa') == 'apa+negate:p=0.5+dag'   # order from `stage`
    with pytest.raises(asa_plugin.SpecError, match='p=2'):
        asa_plugin.validate_spec('negate:p=2')                                          # its own range check
    with pytest.raises(asa_plugin.SpecError, match='cannot be combined'):
        asa_plugin.validate_spec('noaug+negate')
    stack = asa_plugin.create_augment_stack('negate+fixed:p=0', asa_plugin.PluginContext(device=torch.device('cpu')))
    assert [m.name for m in stack.methods] == ['fixed', 'negate']
    img = torch.ones([2, 3, 8, 8])
    assert torch.equal(stack.augment(img, torch.zeros([2, 0])), -img)


def _code_strings(path):
    # String constants of the code, without docstrings (they may give examples).
    tree = ast.parse(open(os.path.join(ROOT, path), encoding='utf-8').read())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize('path', GENERIC)
def test_generic_layer_names_no_method(path):
    names = set(asa_plugin.list_augments())
    named = [s for s in _code_strings(path) if s in names or any(s.startswith(n + ':') for n in names)]
    assert not named, f'{path} names methods {named}; state the fact as a class attribute of the method instead'

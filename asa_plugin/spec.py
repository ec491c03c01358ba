"""The ``--aug`` spec grammar and its rules engine: parse, check against the registry and the
methods' own facts, and print. The order of methods belongs to stack.py.

    spec    := method ('+' method)*
    method  := name [':' option (',' option)*]
    option  := key '=' value | word

A bare ``word`` is either the name of a boolean option of that method (sets it to true, e.g.
``apa:shared_p``) or one entry of the method's word list (the constructor argument named by the
class attribute ``spec_words``: ADA's pipe preset ``ada:bgcfnc``, DiffAugment's policy
``diffaug:color,translation,cutout``, DAG's transforms ``dag:rotation,cropping``); several words
are joined by ',' into that one argument. Values are converted to the type of the option's
default (bool, int, float, str). Ranges are checked later by the method's constructor.
"""

from __future__ import annotations

import difflib
import inspect
import re

from . import registry

#----------------------------------------------------------------------------
# Raised for every malformed or meaningless spec; a ValueError so CLIs can catch one type.

class SpecError(ValueError):
    pass

#----------------------------------------------------------------------------
# The one message format: the spec as given, then the problem and what is allowed.

def spec_error(spec, problem: str) -> SpecError:
    return SpecError(f'Invalid --aug spec "{spec}": {problem}')

#----------------------------------------------------------------------------
# ' Did you mean "x"?' for the closest registered name or option, or ''.

def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' Did you mean "{close[0]}"?' if close else ''

#----------------------------------------------------------------------------
# What a registered class accepts: {option: default} from its constructor signature.

_EMPTY = inspect.Parameter.empty

def method_options(cls) -> tuple:
    """``({name: default}, accepts_any_kwargs)`` for a method class; ``empty`` marks no default."""
    options, var_kw = {}, False
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind == p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            options[p.name] = p.default
    return options, var_kw

#----------------------------------------------------------------------------
# Option text -> value of the default's type; the ValueError names the expected type.

_TRUE = {'1', 'true', 'yes', 'on'}
_FALSE = {'0', 'false', 'no', 'off'}

def _convert(text: str, default):
    """Convert an option's text to the type of its default; raise ValueError with the type name."""
    if isinstance(default, bool):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError('a boolean (true/false/1/0)')
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError('an integer') from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError('a number') from None
    if isinstance(default, str):
        return text
    for kind in (int, float):   # no typed default (None or required): best guess
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return text

#----------------------------------------------------------------------------
# One method part 'name[:options]' -> (name, {option: value}), validated against its class.

_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_WORD = re.compile(r'^[A-Za-z0-9_.\-]+$')

def _parse_method(spec: str, part: str) -> tuple:
    name, _, opts_text = part.partition(':')
    name = name.strip()
    if not name:
        raise spec_error(spec, f'"{part}" has no method name; write methods as name[:option,...] joined by "+"')
    if not registry.is_augment(name):
        raise spec_error(spec, f'unknown method "{name}"; registered: {", ".join(registry.list_augments())}.{_did_you_mean(name, registry.list_augments())}')
    cls = registry.get_augment_class(name)
    options, var_kw = method_options(cls)
    words_key = cls.spec_words
    allowed = ', '.join(options) or 'none'
    kwargs, words = {}, []
    if ':' in part and not opts_text.strip():
        raise spec_error(spec, f'"{part}" has a ":" but no options; drop the ":" or add options (allowed for {name}: {allowed})')
    for item in (opts_text.split(',') if opts_text.strip() else []):
        item = item.strip()
        if not item:
            raise spec_error(spec, f'empty option in "{part}"; separate options by single commas')
        key, eq, value = item.partition('=')
        key, value = key.strip(), value.strip()
        if not eq:  # bare word
            if not _WORD.match(key):
                raise spec_error(spec, f'bad word "{key}" in "{part}"; use letters, digits, "_", "-" or "."')
            if isinstance(options.get(key), bool):
                value = 'true'
            elif words_key is not None:
                words.append(key)
                continue
            else:
                raise spec_error(spec, f'{name} takes no bare word "{key}"; give options as key=value (allowed: {allowed}).{_did_you_mean(key, options)}')
        if not _NAME.match(key) or not value:
            raise spec_error(spec, f'bad option "{item}" in "{part}"; write key=value (allowed for {name}: {allowed})')
        if key == 'preset' and cls.spec_presets and 'preset' not in options:
            if value not in cls.spec_presets:
                raise spec_error(spec, f'{name} has no preset "{value}"; presets: {", ".join(cls.spec_presets)}')
            kwargs[key] = value
            continue
        if key not in options and not var_kw:
            raise spec_error(spec, f'{name} has no option "{key}"; allowed: {allowed}.{_did_you_mean(key, options)}')
        if key in kwargs or key == words_key and words:
            raise spec_error(spec, f'option "{key}" is given twice in "{part}"')
        try:
            kwargs[key] = _convert(value, options.get(key))
        except ValueError as e:
            raise spec_error(spec, f'{name} option {key}="{value}" must be {e}') from None
    if words:
        if words_key in kwargs:
            raise spec_error(spec, f'"{part}" gives {words_key} both as words and as {words_key}=...; use one form')
        kwargs[words_key] = ','.join(words)
    return name, kwargs

#----------------------------------------------------------------------------

def parse_spec(spec: str) -> list:
    """Parse an ``--aug`` spec into ``[(name, options), ...]`` in the order written.

    Args:
        spec: e.g. ``'ada:bgc,target=0.6+apa:shared_p'``.
    Returns:
        A list of ``(method name, {option: converted value})``.
    Raises:
        SpecError: one line naming the spec, the bad part and what is allowed.
    """
    if not isinstance(spec, str) or not spec.strip():
        none = ''.join(f', or "{n}" for none' for n in registry.list_augments() if registry.get_augment_class(n).alone)
        raise spec_error(spec, f'empty; give one or more methods joined by "+" (registered: {", ".join(registry.list_augments())}){none}')
    parts = spec.strip().split('+')
    if any(not p.strip() for p in parts):
        raise spec_error(spec, 'empty method between "+" signs; write name[:options] joined by single "+"')
    parsed = []
    for part in parts:
        parsed += _expand_preset(spec, *_parse_method(spec, part.strip()))
    return parsed

#----------------------------------------------------------------------------
# 'name:preset=X' -> the methods of the class's recipe X (`spec_presets`); options written next to
# the preset override the recipe's options of that method (`asa:preset=official,lambda0=0.5`).

def _expand_preset(spec: str, name: str, kwargs: dict) -> list:
    if 'preset' not in kwargs:
        return [(name, kwargs)]
    kwargs = dict(kwargs)
    recipe = registry.get_augment_class(name).spec_presets[kwargs.pop('preset')]
    expanded = [_parse_method(spec, part) for part in recipe.split('+')]
    return [(n, {**o, **kwargs} if n == name else o) for n, o in expanded]

#----------------------------------------------------------------------------
# Rules over a parsed spec [(name, options)], from the facts each method class declares
# (asa_plugin/base.py); the first reason found is reported.

def _generic_conflict(parsed: list, classes: dict):
    names = [n for n, _ in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f'{", ".join(twice)} appears more than once; give each method once with all its options'
    alone = [n for n in names if classes[n].alone]
    if len(names) > 1 and alone:
        return f'{alone[0]} means no augmentation and cannot be combined; drop {alone[0]} or the other methods'
    providers = [n for n in names if classes[n].provides_p]
    if len(providers) > 1:
        return f'{" and ".join(providers)} both provide the augmentation probability p (there is one ADA pipe); keep one'
    image = [n for n in names if classes[n].image_space]
    if len(image) > 1 and not any(classes[n].shares_image_space(o) for n, o in parsed if n in image):
        hints = ''.join(classes[n].image_space_hint for n in image)
        return f'{" and ".join(image)} both augment every image D sees; pick one{hints}'
    return None


def check_spec(spec, parsed: list) -> None:
    """Raise SpecError if the methods of ``parsed`` do not fit together or an option value is out
    of range. Builds nothing."""
    classes = {n: registry.get_augment_class(n) for n, _ in parsed}
    reason = _generic_conflict(parsed, classes)
    for name, options in ([] if reason else parsed):
        others = {n: (classes[n], o) for n, o in parsed if n != name}
        reason = classes[name].spec_conflict(options, others)
        if reason:
            break
    if reason:
        raise spec_error(spec, reason)
    for name, options in parsed:
        try:
            classes[name].check_options(dict(options))
        except (ValueError, TypeError) as e:
            raise spec_error(spec, f'{name}: {e}') from None

#----------------------------------------------------------------------------
# Text of a parsed spec in the given order: word list first, then key=value in signature order,
# true booleans as bare words. parse_spec(format_spec(p)) == p.

def _format_value(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)
    return str(value)

#----------------------------------------------------------------------------
# One method's text.

def _format_method(name: str, kwargs: dict) -> str:
    cls = registry.get_augment_class(name)
    options, _ = method_options(cls)
    words_key = cls.spec_words
    order = {k: i for i, k in enumerate(options)}
    items = []
    if words_key in kwargs:
        items.append(str(kwargs[words_key]))
    for key in sorted((k for k in kwargs if k != words_key), key=lambda k: (order.get(k, len(order)), k)):
        value = kwargs[key]
        items.append(key if value is True else f'{key}={_format_value(value)}')
    return name + (':' + ','.join(items) if items else '')


def format_spec(parsed: list) -> str:
    """Spec text of ``[(name, options)]`` in the order given."""
    return '+'.join(_format_method(name, kwargs) for name, kwargs in parsed)

#----------------------------------------------------------------------------

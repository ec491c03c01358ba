"""The ``--aug`` spec grammar: parse, validate against the registry, and print canonically.

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
# Where each method sits on D's input path (METHODS.md section 6); the stack runs them in this
# order and the canonical spec lists them in it. A class may override with a `stage` attribute.

STAGES = {
    'noaug':   0,   # nothing
    'apa':     10,  # 1. replace reals by detached fakes
    'ada':     20,  # 2. image-space augmentation
    'fixed':   20,
    'diffaug': 21,  #    (after the ADA pipe when both are explicitly allowed)
    'dag':     30,  # 3. extra heads on transformed views
    'asa':     40,  # 5. bound on the logits
}
DEFAULT_STAGE = 50  # methods registered later run last, in spec order

#----------------------------------------------------------------------------
# A method's stage: class attribute, else the table, else last.

def method_stage(name: str) -> int:
    cls = registry._registry.get(name)
    stage = getattr(cls, 'stage', None) if cls is not None else None
    return int(stage) if stage is not None else STAGES.get(name, DEFAULT_STAGE)

#----------------------------------------------------------------------------
# Canonical order of a parsed spec (ties keep the written order).

def sort_methods(parsed: list) -> list:
    """Stable sort of ``[(name, options)]`` into the canonical order on D's input path."""
    return [item for _, item in sorted(enumerate(parsed), key=lambda t: (method_stage(t[1][0]), t[0]))]

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
    words_key = getattr(cls, 'spec_words', None)
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
        raise spec_error(spec, 'empty; give one or more methods joined by "+" '
                               f'(registered: {", ".join(registry.list_augments())}), or "noaug" for none')
    parts = spec.strip().split('+')
    if any(not p.strip() for p in parts):
        raise spec_error(spec, 'empty method between "+" signs; write name[:options] joined by single "+"')
    return [_parse_method(spec, p.strip()) for p in parts]

#----------------------------------------------------------------------------
# Canonical text: methods in stack order, word list first, then key=value in signature order,
# true booleans as bare words. parse_spec(canonical_spec(s)) == sorted parse_spec(s).

def _format_value(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)
    return str(value)

#----------------------------------------------------------------------------
# One method's canonical text.

def _format_method(name: str, kwargs: dict) -> str:
    cls = registry.get_augment_class(name)
    options, _ = method_options(cls)
    words_key = getattr(cls, 'spec_words', None)
    order = {k: i for i, k in enumerate(options)}
    items = []
    if words_key in kwargs:
        items.append(str(kwargs[words_key]))
    for key in sorted((k for k in kwargs if k != words_key), key=lambda k: (order.get(k, len(order)), k)):
        value = kwargs[key]
        items.append(key if value is True else f'{key}={_format_value(value)}')
    return name + (':' + ','.join(items) if items else '')

#----------------------------------------------------------------------------

def canonical_spec(spec) -> str:
    """The canonical text of a spec (string or ``parse_spec`` output); raises SpecError."""
    parsed = parse_spec(spec) if isinstance(spec, str) else list(spec)
    return '+'.join(_format_method(name, kwargs) for name, kwargs in sort_methods(parsed))

#----------------------------------------------------------------------------

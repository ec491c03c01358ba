"""Registry of augmentation methods: register by name, list, create.

The registry drives the contract tests: every registered method is checked automatically.
"""

from __future__ import annotations

import difflib

_registry: dict = {}  # name -> AugmentMethod subclass

#----------------------------------------------------------------------------

def register_augment(name: str):
    """Class decorator: make an ``AugmentMethod`` subclass available as ``--aug=<name>``."""
    def decorator(cls):
        if name in _registry:
            raise ValueError(f'Augmentation "{name}" is registered twice ({_registry[name].__module__} and {cls.__module__})')
        cls.name = name
        _registry[name] = cls
        return cls
    return decorator


def list_augments() -> list:
    """Names of all registered methods, sorted."""
    return sorted(_registry)


def is_augment(name: str) -> bool:
    return name in _registry


def get_augment_class(name: str):
    """The class registered under ``name``; an unknown name lists the registered ones."""
    if name not in _registry:
        close = difflib.get_close_matches(name, list_augments(), n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ''
        raise KeyError(f'Unknown augmentation "{name}". Registered: {", ".join(list_augments())}.{hint}')
    return _registry[name]


def create_augment(name: str, **kwargs):
    """Instantiate one registered method with its options."""
    return get_augment_class(name)(**kwargs)

#----------------------------------------------------------------------------

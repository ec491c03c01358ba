"""asa_plugin: data-efficient GAN methods behind one narrow interface, selected by ``--aug``.

Importing the package registers every method (explicit list below). Typical use:

    import asa_plugin
    stack = asa_plugin.create_augment_stack('ada:bgc+apa', ctx)   # or 'diffaug', 'dag:rotation', ...
"""

from __future__ import annotations

from .base import AugmentMethod, PluginContext                                  # noqa: F401
from .registry import create_augment, get_augment_class, is_augment, list_augments, register_augment  # noqa: F401
from .spec import SpecError, parse_spec                                          # noqa: F401
from .stack import AugmentStack, canonical_spec, create_augment_stack, validate_spec  # noqa: F401
from . import host                                                               # noqa: F401

#----------------------------------------------------------------------------
# Method modules, in the order they sit on D's input path; importing one registers its method(s).

from . import noaug, apa, ada, diffaug, dag, asa                                 # noqa: F401,E402

#----------------------------------------------------------------------------

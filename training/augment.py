"""Upstream's dotted name for ADA's pipe: upstream's training_options.json constructs
``training.augment.AugmentPipe``. The pipe itself lives with the plugin library that owns it
(asa_plugin/augment_pipe.py, see docs/design.md "Layout and ownership")."""

from asa_plugin.augment_pipe import AugmentPipe  # noqa: F401

"""Small generic utilities shared by the CLIs, the training loop and pickles (upstream's `dnnlib`)."""

from .util import EasyDict, make_cache_dir_path

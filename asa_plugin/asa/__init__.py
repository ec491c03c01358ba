"""ASA: adversarial semantic augmentation (docs/asa.md).

Importing this package registers the `asa` augmentation method.
"""

from .tracker import CovarianceTracker                                  # noqa: F401
from .bound import quad_form, asa_d_loss, asa_g_loss, lambda_schedule   # noqa: F401
from .method import ASA                                                 # noqa: F401

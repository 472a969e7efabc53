"""jebm_lite: the library behind the joint latent-space EBM prior book.

Cui, Wu & Han, "Learning Hierarchical Features with Joint Latent Space Energy-Based Prior",
ICCV 2023. See CONTRIBUTING.md for the module map.
"""

from . import io
from .config import ExperimentConfig, apply_overrides, get_config
from .runtime import ConfigError, RunCard, get_device, get_profile, seed_everything, start_run

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "RunCard",
    "apply_overrides",
    "get_config",
    "get_device",
    "get_profile",
    "io",
    "seed_everything",
    "start_run",
    "__version__",
]

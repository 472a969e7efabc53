"""jebm_lite: the library behind the joint latent-space EBM prior book.

Cui, Wu & Han, "Learning Hierarchical Features with Joint Latent Space Energy-Based Prior",
ICCV 2023. See CONTRIBUTING.md for the module map.
"""

from jebm_lite import io
from jebm_lite.config import ExperimentConfig, apply_overrides, get_config
from jebm_lite.runtime import ConfigError, RunCard, get_device, get_profile, seed_everything, start_run

__version__ = "0.1.0"


def __getattr__(name: str):
    """``jl.run_experiment``: the load-or-train entry point, imported on first use (it pulls in the models)."""
    if name == "run_experiment":
        # on first use: torchvision and the models cost ~2 s
        from jebm_lite.training.load import run_experiment

        return run_experiment
    raise AttributeError(f"module 'jebm_lite' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "RunCard",
    "apply_overrides",
    "get_config",
    "get_device",
    "get_profile",
    "io",
    "run_experiment",
    "seed_everything",
    "start_run",
    "__version__",
]

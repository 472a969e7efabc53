"""Networks: hierarchical generator + ladder inference (paper Eqs. 5, 8), LEBM, conditional hierarchy,
the joint EBM prior (paper Eq. 3) and the per-layer energies of the CVPR 2023 prior. Layer lists are ordered bottom (z_1) to top (z_L)."""

from .blocks import count_params, xavier_init_
from .cond_ebm import LayerEnergies
from .conditional import ConditionalHierarchy
from .ebm import EnergyMLP, JointEBMPrior
from .hierarchical import (
    PRESETS,
    HierarchicalGenerator,
    LadderInference,
    build_hierarchical,
    preset_table,
    resolve_preset,
)
from .lebm import LEBM

__all__ = [
    "PRESETS",
    "ConditionalHierarchy",
    "EnergyMLP",
    "HierarchicalGenerator",
    "JointEBMPrior",
    "LEBM",
    "LayerEnergies",
    "LadderInference",
    "build_hierarchical",
    "count_params",
    "preset_table",
    "resolve_preset",
    "xavier_init_",
]

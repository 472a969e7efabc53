"""Networks: hierarchical generator + ladder inference (paper Eqs. 5, 8), LEBM, conditional hierarchy,
the joint EBM prior (paper Eq. 3) and the per-layer energies of the CVPR 2023 prior (:mod:`.cond_ebm`, not
re-exported here: it samples with :mod:`jebm_lite.sampling`, which imports this package). Layer lists are
ordered bottom (z_1) to top (z_L)."""

from jebm_lite.models.blocks import count_params, xavier_init_
from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.models.ebm import EnergyMLP, JointEBMPrior
from jebm_lite.models.hierarchical import (
    PRESETS,
    HierarchicalGenerator,
    LadderInference,
    build_hierarchical,
    preset_table,
    resolve_preset,
)
from jebm_lite.models.lebm import LEBM

__all__ = [
    "PRESETS",
    "ConditionalHierarchy",
    "EnergyMLP",
    "HierarchicalGenerator",
    "JointEBMPrior",
    "LEBM",
    "LadderInference",
    "build_hierarchical",
    "count_params",
    "preset_table",
    "resolve_preset",
    "xavier_init_",
]

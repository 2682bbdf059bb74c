"""VGGT and VGGT-Omega in PyTorch with the official state-dict layouts: `VGGT(VGGTConfig.vggt_1b())`,
`VGGTOmega(VGGTOmegaConfig.omega_1b_512())`."""

from .config import ModelConfigError, VGGTConfig
from .execution import ExecutionMode
from .family import FAMILIES, detect_family
from .omega import VGGTOmega
from .omega_config import VGGTOmegaConfig
from .vggt import VGGT

__all__ = ["VGGT", "VGGTConfig", "VGGTOmega", "VGGTOmegaConfig", "ModelConfigError", "ExecutionMode", "detect_family",
           "FAMILIES"]

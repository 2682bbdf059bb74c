"""VGGT in PyTorch with the official state-dict layout: `VGGT(VGGTConfig.vggt_1b())`."""

from .config import ModelConfigError, VGGTConfig
from .execution import ExecutionMode
from .vggt import VGGT

__all__ = ["VGGT", "VGGTConfig", "ModelConfigError", "ExecutionMode"]

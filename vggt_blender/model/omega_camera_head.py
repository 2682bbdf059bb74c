"""VGGT-Omega's camera head (VGGT_OMEGA_SPEC §4): one pass over the camera and register tokens.

token_norm on the 1 + R special tokens of every frame -> a trunk of shared Blocks over all frames of a
scene jointly (no RoPE, no qk-norm, masked k-bias) -> trunk_norm on the camera tokens -> camera_branch
(Linear, exact GELU, Linear) -> [t(3), quat XYZW(4), FoV(2)] with FoV = ReLU + 0.01.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .camera_head import POSE_DIM
from .layers import Block
from .omega_patch_embed import LAYERSCALE_INIT, OMEGA_NORM_EPS

FOV_FLOOR = 0.01


def activate_omega_pose(raw: Tensor) -> Tensor:
    """Translation and quaternion linear; field of view ReLU(x) + 0.01 (never 0, so focal lengths stay finite)."""
    return torch.cat([raw[..., :7], F.relu(raw[..., 7:]) + FOV_FLOOR], dim=-1)


def special_token_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float) -> nn.ModuleList:
    """The trunk/readout blocks of the Omega heads (2C wide, no RoPE, no qk-norm, masked k-bias)."""
    return nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, init_values=LAYERSCALE_INIT, norm_eps=OMEGA_NORM_EPS, mask_k_bias=True)
        for _ in range(depth)
    )


class OmegaCameraHead(nn.Module):
    def __init__(self, dim_in: int, layer_idx: int, trunk_depth: int = 4, num_heads: int = 16,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # the aggregator layer read (the last)
        self.token_norm = nn.LayerNorm(dim_in, eps=OMEGA_NORM_EPS)
        self.trunk = special_token_blocks(dim_in, trunk_depth, num_heads, mlp_ratio)
        self.trunk_norm = nn.LayerNorm(dim_in, eps=OMEGA_NORM_EPS)
        self.camera_branch = nn.Sequential(nn.Linear(dim_in, dim_in // 2), nn.GELU(), nn.Linear(dim_in // 2, POSE_DIM))

    def forward(self, tokens: Mapping[int, Tensor], patch_start_idx: int) -> Tensor:
        """{layer: [B, S, P, 2C]} -> pose encoding [B, S, 9] (activated)."""
        layer = tokens[self.layer_idx]
        batch, frames = layer.shape[:2]
        special = self.token_norm(layer[:, :, :patch_start_idx].to(self.token_norm.weight.dtype))
        x = special.reshape(batch, frames * patch_start_idx, -1)
        for block in self.trunk:
            x = block(x)
        camera = self.trunk_norm(x.reshape(batch, frames, patch_start_idx, -1)[:, :, 0])
        return activate_omega_pose(self.camera_branch(camera))

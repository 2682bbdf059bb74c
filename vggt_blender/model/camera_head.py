"""Camera head: iterative refinement of the 9-d pose encoding from the camera tokens (VGGT_SPEC §4).

Encoding "absT_quaR_FoV": [t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w].
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .head_activations import activate_pose
from .layers import Block, Mlp

POSE_DIM = 9


class CameraHead(nn.Module):
    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        iterations: int = 4,
        layer_idx: int = -1,
    ) -> None:
        super().__init__()
        self.iterations = iterations
        self.layer_idx = layer_idx  # which aggregator step's tokens to read (absolute index, or -1 for a list)
        # The trunk attends across the S camera tokens of one scene: no qk-norm, no RoPE, eps 1e-5.
        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads, mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim_in)
        # adaLN: SiLU -> Linear gives (shift, scale, gate).
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in, bias=True))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_DIM)

    def forward(
        self, tokens: Mapping[int, Tensor] | Sequence[Tensor], num_iterations: int | None = None
    ) -> list[Tensor]:
        """Aggregated tokens -> list (one per iteration) of activated encodings [B, S, 9]."""
        layer = tokens[self.layer_idx]  # [B, S, P, 2C]
        camera_tokens = layer[:, :, 0].to(self.token_norm.weight.dtype)  # [B, S, 2C]
        camera_tokens = self.token_norm(camera_tokens)  # fixed across iterations
        batch, frames, _ = camera_tokens.shape

        encoding: Tensor | None = None  # running pre-activation encoding [B, S, 9]
        results: list[Tensor] = []
        for _ in range(num_iterations or self.iterations):
            if encoding is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(batch, frames, -1))
            else:
                # No gradient through the previous iteration (as trained).
                condition = self.embed_pose(encoding.detach())
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            modulated = gate * (self.adaln_norm(camera_tokens) * (1 + scale) + shift) + camera_tokens
            modulated = self.trunk(modulated)
            delta = self.pose_branch(self.trunk_norm(modulated))
            encoding = delta if encoding is None else encoding + delta
            results.append(activate_pose(encoding))
        return results

"""VGGT-Omega's text-alignment readout (VGGT_OMEGA_SPEC §6; the 256-px text checkpoint only).

A learned language token is prepended to the normed camera/register tokens of all frames, read out by a
few Blocks, normed (`text_alignment_token`) and projected to a unit-norm scene embedding
(`text_alignment_embedding`).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .omega_camera_head import special_token_blocks
from .omega_patch_embed import OMEGA_NORM_EPS


class OmegaTextAlignmentHead(nn.Module):
    def __init__(self, dim_in: int, layer_idx: int, depth: int = 4, num_heads: int = 16,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.token_norm = nn.LayerNorm(dim_in, eps=OMEGA_NORM_EPS)
        self.language_token = nn.Parameter(torch.zeros(1, 1, dim_in))
        nn.init.trunc_normal_(self.language_token, std=0.02)
        self.readout_blocks = special_token_blocks(dim_in, depth, num_heads, mlp_ratio)
        self.language_token_norm = nn.LayerNorm(dim_in, eps=OMEGA_NORM_EPS)
        self.embedding_projector = nn.Sequential(
            nn.Linear(dim_in, dim_in // 2),
            nn.GELU(),
            nn.LayerNorm(dim_in // 2, eps=OMEGA_NORM_EPS),
            nn.Linear(dim_in // 2, dim_in),
        )

    def forward(self, tokens: Mapping[int, Tensor], patch_start_idx: int) -> dict[str, Tensor]:
        layer = tokens[self.layer_idx]
        batch, frames = layer.shape[:2]
        special = self.token_norm(layer[:, :, :patch_start_idx].to(self.token_norm.weight.dtype))
        x = torch.cat([self.language_token.expand(batch, -1, -1),
                       special.reshape(batch, frames * patch_start_idx, -1)], dim=1)
        for block in self.readout_blocks:
            x = block(x)
        token = self.language_token_norm(x[:, 0])
        embedding = F.normalize(self.embedding_projector(token), dim=-1)
        return {"text_alignment_embedding": embedding, "text_alignment_token": token}

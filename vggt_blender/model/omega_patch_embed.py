"""VGGT-Omega's per-frame patch embed: a DINOv3-style ViT (VGGT_OMEGA_SPEC §3.2).

Keys under `aggregator.patch_embed.`: patch_embed.proj, cls_token, storage_tokens, mask_token,
rope_embed.periods, blocks.{i} (the shared Block with masked k-bias, no qk-norm, eps 1e-5), norm.
No position table: RoPE in every block carries the positions. Only the normed patch tokens are returned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .layers import Block, PatchEmbed
from .omega_rope import OmegaRopeApply, OmegaRopeTables

OMEGA_NORM_EPS = 1e-5  # every LayerNorm of VGGT-Omega, the patch embed's included (v1's DINOv2: 1e-6)
LAYERSCALE_INIT = 1e-5


class DinoV3Encoder(nn.Module):
    def __init__(
        self,
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_storage_tokens: int = 4,
        rope_base: float = 100.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_storage_tokens = num_storage_tokens
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, num_storage_tokens, embed_dim)) if num_storage_tokens else None
        # Unused at inference, but the official cls token is cls_token + 0 * mask_token (so a NaN would show).
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.rope_embed = OmegaRopeTables(embed_dim // num_heads, rope_base)
        rope = OmegaRopeApply()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=LAYERSCALE_INIT, rope=rope, norm_eps=OMEGA_NORM_EPS,
                  mask_k_bias=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=OMEGA_NORM_EPS)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_storage_tokens

    def prefix_tokens(self) -> Tensor:
        """[1, 1 + storage, C]: the cls token (plus 0 * mask_token, as the official model) and the storage tokens."""
        cls = self.cls_token + 0 * self.mask_token
        if self.storage_tokens is None:
            return cls
        return torch.cat([cls, self.storage_tokens], dim=1)

    def forward(self, images: Tensor, execution: Any = None) -> Tensor:
        """[N, 3, H, W] normalized images -> [N, h*w, C] normed patch tokens.

        `execution`: an ExecutionMode (model/execution.py); in the lean mode the blocks update one residual
        stream in place, over chunks of tokens, and the result is float32.
        """
        n, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if execution is not None and execution.lean:
            return self._forward_lean(images, grid_h, grid_w, execution)
        x = self.patch_embed(images)  # [N, h*w, C]
        # fp32 prefix + autocast-bf16 patches: cat promotes to fp32, as in the official model.
        x = torch.cat([self.prefix_tokens().expand(n, -1, -1), x], dim=1)
        pos = self.rope_embed(grid_h, grid_w, self.num_prefix_tokens)  # the same table for every block
        for block in self.blocks:
            x = block(x, pos=pos)
        # The official model norms every token and keeps the patches; LayerNorm is per token, so norm only those.
        return self.norm(x[:, self.num_prefix_tokens :])

    def _forward_lean(self, images: Tensor, grid_h: int, grid_w: int, execution: Any) -> Tensor:
        n = images.shape[0]
        prefix = self.num_prefix_tokens
        proj = self.patch_embed.proj
        x = torch.empty(n, prefix + grid_h * grid_w, proj.out_channels, dtype=execution.residual_dtype,
                        device=images.device)
        x[:, :prefix] = self.prefix_tokens()
        x[:, prefix:] = self.patch_embed(images.to(proj.weight.dtype))
        pos = self.rope_embed(grid_h, grid_w, prefix).expand(n, -1, -1, -1)
        for block in self.blocks:
            block(x, pos=pos, execution=execution)  # in place
        return self.norm(x[:, prefix:].to(self.norm.weight.dtype))

"""VGGT-Omega's per-frame patch embed: a DINOv3-style ViT (VGGT_OMEGA_SPEC §3.2).

Keys under `aggregator.patch_embed.`: patch_embed.proj, cls_token, storage_tokens, mask_token,
rope_embed.periods, blocks.{i} (the shared Block with masked k-bias, no qk-norm, eps 1e-5), norm.
No position table: RoPE in every block carries the positions. Only the normed patch tokens are returned.
"""

from __future__ import annotations

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

    def forward(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] normalized images -> [N, h*w, C] normed patch tokens."""
        n, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        x = self.patch_embed(images)  # [N, h*w, C]
        # fp32 prefix + autocast-bf16 patches: cat promotes to fp32, as in the official model.
        x = torch.cat([self.prefix_tokens().expand(n, -1, -1), x], dim=1)
        pos = self.rope_embed(grid_h, grid_w, self.num_prefix_tokens)  # the same table for every block
        for block in self.blocks:
            x = block(x, pos=pos)
        # The official model norms every token and keeps the patches; LayerNorm is per token, so norm only those.
        return self.norm(x[:, self.num_prefix_tokens :])

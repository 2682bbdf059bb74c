"""DINOv2 ViT with register tokens, as used per frame by the aggregator (VGGT_SPEC §3.2).

Keys under `aggregator.patch_embed.`: patch_embed.proj, cls_token, pos_embed, register_tokens, mask_token,
blocks.{i}, norm. Only the normed patch tokens are returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .execution import ExecutionMode, is_lean
from .layers import Block, PatchEmbed

DINO_NORM_EPS = 1e-6


class DinoV2Encoder(nn.Module):
    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size  # side of the trained (square) position table
        self.num_register_tokens = num_register_tokens

        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        # In the checkpoint but never used at inference.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=1.0, norm_eps=DINO_NORM_EPS) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=DINO_NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # Only matters for training from scratch; the checkpoint overwrites everything. Meta-device safe.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)

    def position_table(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> Tensor:
        """[1, 1 + h*w, D] position embedding for an h x w patch grid.

        The stored table is used as is for the trained square grid; otherwise its patch part is resized
        with antialiased bicubic to exactly (h, w) in fp32 (VGGT uses no interpolation offset).
        """
        if grid_h == grid_w == self.grid_size:
            return self.pos_embed
        table = self.pos_embed.float()
        cls_pos = table[:, :1]  # [1, 1, D]
        dim = table.shape[-1]
        grid = table[:, 1:].reshape(1, self.grid_size, self.grid_size, dim).permute(0, 3, 1, 2)  # [1, D, M, M]
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patches = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, patches], dim=1).to(dtype)

    def forward(self, images: Tensor, execution: ExecutionMode | None = None) -> Tensor:
        """[N, 3, H, W] normalized images -> [N, h*w, D] normed patch tokens."""
        n, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        x = self.patch_embed(images)  # [N, h*w, D]
        regs = self.num_register_tokens
        if is_lean(execution):
            # One preallocated residual stream, [cls, registers, patches], updated in place by the blocks.
            table = self.position_table(grid_h, grid_w, self.pos_embed.dtype)
            tokens = torch.empty(n, 1 + regs + x.shape[1], x.shape[2], dtype=execution.residual_dtype, device=x.device)
            tokens[:, :1] = self.cls_token + table[:, :1]
            if self.register_tokens is not None:
                tokens[:, 1:1 + regs] = self.register_tokens
            tokens[:, 1 + regs:] = x.to(table.dtype) + table[:, 1:]
            del x
            for block in self.blocks:
                block(tokens, execution=execution)
            return self.norm(tokens[:, 1 + regs:].to(self.norm.weight.dtype))
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)  # [N, 1 + h*w, D]
        x = x + self.position_table(grid_h, grid_w, x.dtype)
        if self.register_tokens is not None:
            # Registers go after cls and get no position embedding.
            x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1 + regs :]

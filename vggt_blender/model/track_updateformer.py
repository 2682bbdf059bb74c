"""The tracker's EfficientUpdateFormer: alternating time attention and virtual-track space attention.

Key names follow the official layout (`time_blocks.i`, `space_virtual2point_blocks.i`, `virual_tracks`, ...).
Blocks add attention and MLP onto the *normalised* input (trap T16); every norm is LayerNorm eps 1e-5 and
every GELU is exact (trap T19).
"""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttentionBlock(nn.Module):
    """y = norm1(x); y += attn(y, y, y); y += mlp(norm2(y)). The raw input is not a residual."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """y = norm1(x); c = norm_context(ctx); y += attn(y, c, c); y += mlp(norm2(y))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """[B,N,S,input_dim] transformer input -> [B,N,S,output_dim] updates (Δxy then Δfeatures)."""

    def __init__(
        self,
        input_dim: int,
        hidden_size: int,
        output_dim: int,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        # The misspelling is the official state-dict key.
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))

        def stack(block: type[nn.Module]) -> nn.ModuleList:
            return nn.ModuleList(block(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        self.time_blocks = stack(SelfAttentionBlock)
        self.space_virtual_blocks = stack(SelfAttentionBlock)
        self.space_point2virtual_blocks = stack(CrossAttentionBlock)
        self.space_virtual2point_blocks = stack(CrossAttentionBlock)
        self._init_like_official()

    def _init_like_official(self) -> None:
        # Only matters for untrained use (tests); checkpoints overwrite all of it.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        first_tokens = tokens
        batch, points, frames, width = tokens.shape
        virtual = self.virual_tracks.repeat(batch, 1, frames, 1)
        tokens = torch.cat([tokens, virtual], dim=1)  # virtual tracks after the points (trap T6)
        tracks = points + self.num_virtual_tracks

        for i, time_block in enumerate(self.time_blocks):
            # Time: attention over frames, per (scene, track); virtual tracks included.
            tokens = time_block(tokens.reshape(batch * tracks, frames, width)).reshape(batch, tracks, frames, width)
            # Space: per (scene, frame), virtual<-points, virtual self, points<-updated virtual (trap T7).
            space = tokens.permute(0, 2, 1, 3).reshape(batch * frames, tracks, width)
            point_tokens, virtual_tokens = space[:, :points], space[:, points:]
            virtual_tokens = self.space_virtual2point_blocks[i](virtual_tokens, point_tokens)
            virtual_tokens = self.space_virtual_blocks[i](virtual_tokens)
            point_tokens = self.space_point2virtual_blocks[i](point_tokens, virtual_tokens)
            space = torch.cat([point_tokens, virtual_tokens], dim=1)
            tokens = space.reshape(batch, frames, tracks, width).permute(0, 2, 1, 3)

        tokens = tokens[:, :points] + first_tokens
        return self.flow_head(self.output_norm(tokens))

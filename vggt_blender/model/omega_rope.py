"""VGGT-Omega's 2-D RoPE (VGGT_OMEGA_SPEC §3.3): continuous coordinates, not v1's integer positions.

`OmegaRopeTables` owns the `periods` buffer of the checkpoint and makes the (sin, cos) tables for a patch
grid; `OmegaRopeApply` (no state) rotates q or k with them and is what the shared `Attention` calls as
rope(t, tables). Only the last h*w tokens of a sequence are rotated; the prefix (cls/storage tokens or
camera/register tokens) passes unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class OmegaRopeTables(nn.Module):
    """Periods 100^(4k/d) (a persistent buffer, [d/4]) -> sin/cos tables [h*w, d] for an h x w grid."""

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        exponents = 2 * torch.arange(quarter, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", float(base) ** exponents, persistent=True)

    def forward(self, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor]:
        """("max" normalisation) coordinate of row i: 2*(i + 0.5)/max(h, w) - 1, likewise for columns, so
        both axes start at -1 and only the longer one reaches +1. Angles 2*pi*c/period, y quarter then
        x quarter, tiled twice. float32 throughout (the order of operations follows the official tables)."""
        periods = self.periods.float()
        device = periods.device
        longest = max(grid_h, grid_w)
        rows = torch.arange(0.5, grid_h, dtype=torch.float32, device=device) / longest
        cols = torch.arange(0.5, grid_w, dtype=torch.float32, device=device) / longest
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1)  # [h*w, 2] (y, x)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # [h*w, 2, d/4]
        angles = angles.flatten(1, 2).tile(2)  # [h*w, d]
        return torch.sin(angles), torch.cos(angles)


class OmegaRopeApply(nn.Module):
    """rope(t, (sin, cos)): t [B, heads, N, d]; channel i pairs with i + d/2 (rotate-half over the head)."""

    def forward(self, t: Tensor, tables: tuple[Tensor, Tensor]) -> Tensor:
        sin, cos = tables
        prefix = t.shape[-2] - sin.shape[-2]
        if prefix < 0:
            raise ValueError(f"RoPE tables for {sin.shape[-2]} tokens, sequence of {t.shape[-2]}")
        dtype = t.dtype
        # Rotated in the tables' dtype (fp32) and cast back, as the official code does under autocast.
        work = t.to(sin.dtype)
        head, tail = work[..., :prefix, :], work[..., prefix:, :]
        first, second = tail.chunk(2, dim=-1)
        rotated = tail * cos + torch.cat([-second, first], dim=-1) * sin
        return torch.cat([head, rotated], dim=-2).to(dtype)

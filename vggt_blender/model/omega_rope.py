"""VGGT-Omega's 2-D RoPE (VGGT_OMEGA_SPEC §3.3): continuous coordinates, not v1's integer positions.

`OmegaRopeTables` owns the `periods` buffer of the checkpoint and makes, for a patch grid, one per-token
table `pos` [1, prefix + h*w, 2, d] (sin, cos). `OmegaRopeApply` (no state) rotates q or k with it and is
what the shared `Attention` calls as rope(t, pos). The prefix tokens (cls/storage in the patch embed,
camera/registers in the frame blocks) get sin 0 and cos 1, so they pass exactly unchanged, as the official
code leaves them; being per token, `pos` can be sliced along tokens like v1's positions (chunked runs).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class OmegaRopeTables(nn.Module):
    """Periods 100^(4k/d) (a persistent buffer, [d/4]) -> the per-token (sin, cos) table of a patch grid."""

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
        exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", float(base) ** exponents, persistent=True)

    def sin_cos(self, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor]:
        """[h*w, d] each. "max" normalisation: row i sits at 2*(i + 0.5)/max(h, w) - 1, columns likewise, so
        both axes start at -1 and only the longer one reaches +1. Angles 2*pi*c/period, the y quarter then
        the x quarter, tiled twice. float32, in the official order of operations."""
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

    @torch.no_grad()
    def forward(self, grid_h: int, grid_w: int, prefix: int) -> Tensor:
        """[1, prefix + h*w, 2, d]: [..., 0, :] sin, [..., 1, :] cos; identity rotation on the prefix tokens."""
        sin, cos = self.sin_cos(grid_h, grid_w)
        table = torch.zeros(prefix + sin.shape[0], 2, sin.shape[1], dtype=sin.dtype, device=sin.device)
        table[:prefix, 1] = 1.0
        table[prefix:, 0] = sin
        table[prefix:, 1] = cos
        return table[None]


class OmegaRopeApply(nn.Module):
    """rope(t, pos): t [B, heads, N, d], pos [1 or B, N, 2, d]; channel i pairs with i + d/2 (rotate-half)."""

    def forward(self, t: Tensor, pos: Tensor) -> Tensor:
        if pos.shape[-3] != t.shape[-2]:
            raise ValueError(f"RoPE table for {pos.shape[-3]} tokens, sequence of {t.shape[-2]}")
        sin, cos = pos[:, None, :, 0], pos[:, None, :, 1]  # [B', 1, N, d]
        # Rotated in the table's dtype (fp32) and cast back, as the official code does under autocast.
        work = t.to(pos.dtype)
        first, second = work.chunk(2, dim=-1)
        return (work * cos + torch.cat([-second, first], dim=-1) * sin).to(t.dtype)

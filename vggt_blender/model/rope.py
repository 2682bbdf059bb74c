"""2-D rotary position embedding of the aggregator (VGGT_SPEC §3.4).

Each head's channels are split in two halves: the first is rotated by the patch row (y), the second by
the patch column (x). Inside a half the rotation is the "rotate-half" (NeoX) form with base `frequency`
(100 in VGGT, not 10000).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def patch_positions(num_frames: int, grid_h: int, grid_w: int, num_special: int, device: torch.device) -> Tensor:
    """Integer (y, x) position of every token of a frame, [num_frames, num_special + h*w, 2].

    Patches get their grid coordinates shifted by +1 and the special (camera/register) tokens get (0, 0),
    so a rotation by angle 0 leaves the special tokens untouched.
    """
    ys = torch.arange(grid_h, device=device)
    xs = torch.arange(grid_w, device=device)
    grid = torch.cartesian_prod(ys, xs) + 1  # [h*w, 2], raster order (y outer, x inner)
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    per_frame = torch.cat([special, grid], dim=0)  # [P, 2]
    return per_frame.unsqueeze(0).expand(num_frames, -1, -1)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2-D RoPE to q or k shaped [B, heads, N, head_dim] given positions [B, N, 2]."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)

    def _cos_sin(self, positions: Tensor, half_dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # Angles in fp32 (as the official tables), then cast to the token dtype before cos/sin.
        exponents = torch.arange(0, half_dim, 2, device=positions.device).float() / half_dim
        inv_freq = 1.0 / (self.frequency**exponents)  # [half_dim/2]
        angles = positions.float()[..., None] * inv_freq  # [B, N, half_dim/2]
        angles = angles.to(dtype)
        angles = torch.cat([angles, angles], dim=-1)  # [B, N, half_dim]
        return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)  # [B, 1, N, half_dim]

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def _rope_1d(self, x: Tensor, positions: Tensor) -> Tensor:
        cos, sin = self._cos_sin(positions, x.shape[-1], x.dtype)
        return x * cos + self._rotate_half(x) * sin

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if tokens.shape[-1] % 4:
            raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {tokens.shape[-1]}")
        rows, cols = tokens.chunk(2, dim=-1)
        rows = self._rope_1d(rows, positions[..., 0])
        cols = self._rope_1d(cols, positions[..., 1])
        return torch.cat([rows, cols], dim=-1)

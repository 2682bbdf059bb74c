"""Sinusoidal embeddings of the tracker: the flow embedding and the 2-D position table (TRACK_HEAD_SPEC §6.3-6.4).

Both are float32 "islands" (trap T10): their arithmetic is done so that the float32 rounding matches the
official head, which matters because the flow frequencies reach ~1000 rad per feature pixel (trap T9).
"""

from __future__ import annotations

import torch


def flow_embedding(flows: torch.Tensor, dim: int) -> torch.Tensor:
    """Embed flows [..., 2] (feature pixels) into [..., 2*dim] float32 channels.

    Per axis: interleaved [sin(f*w0), cos(f*w0), sin(f*w1), ...] with linear frequencies
    w_k = 2k * 1000/dim (k < dim/2); the x block comes first, then the y block.
    """
    freqs = torch.arange(0, dim, 2, device=flows.device, dtype=torch.float32) * (1000.0 / dim)
    blocks = []
    for axis in range(2):
        angle = flows[..., axis:axis + 1] * freqs  # float32 product, then float32 sin/cos
        pair = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)
        blocks.append(pair.flatten(-2).to(torch.float32))
    return torch.cat(blocks, dim=-1)


def _sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[P] float64 positions -> [P, dim]: all sines, then all cosines, base 10000, dim/2 frequencies."""
    count = dim // 2
    exponents = torch.arange(count, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**exponents
    angles = positions[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_position_table(dim: int, height: int, width: int) -> torch.Tensor:
    """[1, dim, height, width] float32 table: first half encodes the column x, second half the row y."""
    if dim % 4:
        raise ValueError(f"position table width {dim} must be divisible by 4")
    xs = torch.arange(width, dtype=torch.float64).repeat(height)  # raster order: x fast
    ys = torch.arange(height, dtype=torch.float64).repeat_interleave(width)
    table = torch.cat([_sincos_1d(xs, dim // 2), _sincos_1d(ys, dim // 2)], dim=1)  # [H*W, dim], float64
    return table.to(torch.float32).T.reshape(1, dim, height, width)

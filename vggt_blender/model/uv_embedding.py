"""Sinusoidal UV position embedding added to DPT feature maps (VGGT_SPEC §5, `_apply_pos_embed`)."""

from __future__ import annotations

import torch
from torch import Tensor


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[height, width, 2] (u, v) grid spanning +-aspect/diag horizontally and +-1/diag vertically."""
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x = aspect_ratio / diag
    span_y = 1.0 / diag
    end_x = span_x * (width - 1) / width
    end_y = span_y * (height - 1) / height
    xs = torch.linspace(-end_x, end_x, steps=width, dtype=dtype, device=device)
    ys = torch.linspace(-end_y, end_y, steps=height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # each [height, width]
    return torch.stack([uu, vv], dim=-1)


def sincos_1d(channels: int, positions: Tensor, omega_0: float = 100.0) -> Tensor:
    """[M] positions -> [M, channels] = [sin(p*w_j) ..., cos(p*w_j) ...], w_j = omega_0^(-j/(channels/2)).

    Computed in float64 (float32 on Apple MPS, which has no float64), returned as float32.
    """
    work = torch.float32 if positions.device.type == "mps" else torch.float64
    omega = torch.arange(channels // 2, dtype=work, device=positions.device)
    omega = omega / (channels / 2.0)
    omega = 1.0 / omega_0**omega  # [channels/2]
    angles = positions.reshape(-1).to(work)[:, None] * omega[None, :]  # [M, channels/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def add_uv_embedding(x: Tensor, image_width: int, image_height: int, ratio: float = 0.1) -> Tensor:
    """x [N, C, h, w] + 0.1 * embedding of the image-aspect UV grid (C/2 channels for u, C/2 for v)."""
    channels, height, width = x.shape[1:]
    if channels % 4:
        raise ValueError(f"the UV embedding needs a channel count divisible by 4, got {channels}")
    grid = uv_grid(width, height, image_width / image_height, x.dtype, x.device).reshape(-1, 2)
    emb = torch.cat([sincos_1d(channels // 2, grid[:, 0]), sincos_1d(channels // 2, grid[:, 1])], dim=-1)
    emb = emb.view(height, width, channels) * ratio
    # Cast only matters for a model held in bf16/fp16 (no autocast); in fp32 it is a no-op.
    return x + emb.permute(2, 0, 1)[None].to(x.dtype)

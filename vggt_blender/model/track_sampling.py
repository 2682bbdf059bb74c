"""Bilinear sampling and the correlation pyramid used by the track head's tracker.

Coordinates are (x, y) in map pixel-index units with the align_corners=True convention: x = 0 is the centre
of the first column and x = W-1 the centre of the last (TRACK_HEAD_SPEC §4). Query features and the position
table are sampled with border padding; correlation windows with zero padding and no weight renormalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import RequestError

# Upper bound on correlation-volume elements held at once (B*S*n*H*W); larger query sets are done in chunks.
_CORR_CHUNK_ELEMENTS = 1 << 26


def sample_bilinear(maps: torch.Tensor, coords: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinearly sample `maps` [B,C,H,W] at `coords` [B,...,2] (x, y) pixel-index units -> [B,C,...].

    The coordinates are cast to the map dtype first (as the official sampler does, which matters under
    autocast), then normalised with 2/max(size-1, 1) so that a size-1 axis always reads index 0.
    """
    height, width = maps.shape[-2:]
    grid = coords.to(device=maps.device, dtype=maps.dtype)
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=grid.device, dtype=grid.dtype)
    grid = grid * scale - 1
    squeeze = grid.dim() == 3
    if squeeze:  # [B,R,2] -> [B,R,1,2] so grid_sample sees a 2-D grid
        grid = grid.unsqueeze(2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    return out.squeeze(-1) if squeeze else out


def sample_at_points(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Per-point features with border padding: maps [B,C,H,W], points [B,R,2] -> [B,R,C]."""
    return sample_bilinear(maps, points, padding="border").transpose(1, 2)


def window_offsets(radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[K,K,2] offsets (dx, dy), K = 2r+1, with the x offset on the slow axis (trap T1)."""
    steps = torch.linspace(-radius, radius, 2 * radius + 1, device=device, dtype=dtype)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx, dy], dim=-1)


class CorrelationPyramid:
    """Per-frame feature pyramid (2x2 mean pooling, floor) and windowed correlation lookup.

    Built once per tracker forward from the LayerNormed maps [B,S,C,H,W]; `lookup` gives
    [B,S,N, levels*(2r+1)^2] with level 0 first and, within a level, x offset slow and y offset fast.
    """

    def __init__(self, fmaps: torch.Tensor, levels: int, radius: int) -> None:
        self.radius = radius
        self.levels = [fmaps]
        for _ in range(levels - 1):
            b, s, c, h, w = self.levels[-1].shape
            if h < 2 or w < 2:  # 2x2 pooling would give an empty level
                raise RequestError(
                    f"track head: the {fmaps.shape[-2]}x{fmaps.shape[-1]} feature map is too small for "
                    f"{levels} correlation levels; use larger images for tracking"
                )
            pooled = F.avg_pool2d(self.levels[-1].reshape(b * s, c, h, w), kernel_size=2, stride=2)
            self.levels.append(pooled.reshape(b, s, c, *pooled.shape[-2:]))

    def lookup(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Correlate `targets` [B,S,N,C] with every level and read (2r+1)^2 windows around `coords` [B,S,N,2]."""
        b, s, n, _ = targets.shape
        largest = self.levels[0].shape[-2] * self.levels[0].shape[-1]
        chunk = max(1, _CORR_CHUNK_ELEMENTS // max(1, b * s * largest))
        if n <= chunk:
            return self._lookup(targets, coords)
        parts = [self._lookup(targets[:, :, i:i + chunk], coords[:, :, i:i + chunk]) for i in range(0, n, chunk)]
        return torch.cat(parts, dim=2)

    def _lookup(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        b, s, n, c = targets.shape
        k = 2 * self.radius + 1
        offsets = window_offsets(self.radius, coords.device, coords.dtype).view(1, k, k, 2)
        out = []
        for level, maps in enumerate(self.levels):
            h, w = maps.shape[-2:]
            # Dot product with every pixel, scaled by 1/sqrt(C): [B,S,N,H*W] -> one 1-channel map per target.
            volume = torch.matmul(targets, maps.reshape(b, s, c, h * w)) / math.sqrt(c)
            centres = coords.reshape(b * s * n, 1, 1, 2) / (2**level)  # no half-pixel correction (T14)
            window = sample_bilinear(volume.reshape(b * s * n, 1, h, w), centres + offsets, padding="zeros")
            out.append(window.reshape(b, s, n, k * k))
        return torch.cat(out, dim=-1)

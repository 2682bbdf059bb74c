"""VGGT track head: a feature-only DPT head (stride-2 feature maps) followed by the iterative tracker.

State-dict layout (under the model's `track_head.` prefix): `feature_extractor.*` and `tracker.*`.
The head runs in the caller's precision: VGGT does not wrap it in autocast(enabled=False) (trap T20).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dpt_head import DPTHead
from .tracker import TrackerPredictor


class TrackHead(nn.Module):
    """Tracks frame-0 query points through every frame of each scene."""

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        features: int = 128,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        hidden_size: int = 384,
        corr_levels: int = 7,
        corr_radius: int = 4,
        iters: int = 4,
        stride: int = 2,
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=list(out_channels),
            intermediate_layer_idx=list(intermediate_layer_idx),
            feature_only=True,
            down_ratio=2,
            pos_embed=False,
        )
        self.tracker = TrackerPredictor(
            latent_dim=features,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            hidden_size=hidden_size,
            predict_conf=predict_conf,
        )

    def forward(
        self,
        tokens: dict[int, torch.Tensor],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
        frames_chunk_size: int | None = 8,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """tokens: layer index -> [B,S,P,2C]; images [B,S,3,H,W] in [0,1] (only its shape is used);
        query_points [B,N,2] pixel (x, y) on frame 0; the feature maps are made per `frames_chunk_size` frames.
        Returns (tracks per iteration [B,S,N,2] in input pixels, vis [B,S,N], conf [B,S,N])."""
        if query_points is None or query_points.dim() != 3 or query_points.shape[-1] != 2:
            shape = None if query_points is None else tuple(query_points.shape)
            raise ValueError(f"track head: query_points must be [B,N,2] pixel (x, y), got {shape}")
        fmaps = self.feature_extractor(tokens, images, patch_start_idx, frames_chunk_size)  # [B,S,C,H/2,W/2]
        return self.tracker(query_points, fmaps, iters=self.iters if iters is None else iters)

"""The track head's iterative tracker (official `BaseTrackerPredictor`, TRACK_HEAD_SPEC §5-7).

Coordinates are kept in feature pixels (input pixels / stride) as absolute float32 values; flows are formed
as coords - coords[frame 0] from that running state, which reproduces the official float32 rounding that
the high-frequency flow embedding amplifies (trap T9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .track_embeddings import flow_embedding, sincos_position_table
from .track_sampling import CorrelationPyramid, sample_at_points
from .track_updateformer import EfficientUpdateFormer, Mlp

# Flows are also fed raw, divided by this constant, whatever the image size.
MAX_SCALE = 518.0


@dataclass
class TrackerState:
    """What one refinement iteration reads and writes (feature-pixel coords [B,S,N,2], feats [B,S,N,C])."""

    coords: torch.Tensor
    feats: torch.Tensor


@dataclass
class TrackerContext:
    """Per-forward constants shared by every iteration."""

    queries: torch.Tensor  # [B,N,2] feature pixels
    pyramid: CorrelationPyramid
    position: torch.Tensor  # [B*N,1,D] position embedding at the queries


class TrackerPredictor(nn.Module):
    """Refines tracks of frame-0 query points through all frames of a scene."""

    def __init__(
        self,
        latent_dim: int = 128,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        depth: int = 6,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        if latent_dim % 4 or hidden_size % 8:
            raise ValueError(f"tracker needs latent_dim % 4 == 0 and hidden_size % 8 == 0, "
                             f"got {latent_dim} and {hidden_size}")
        self.latent_dim = latent_dim
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.transformer_dim = 3 * latent_dim + 4  # flow emb + raw flows + corr + track features
        corr_dim = corr_levels * (2 * corr_radius + 1) ** 2

        self.corr_mlp = Mlp(corr_dim, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            input_dim=self.transformer_dim, hidden_size=hidden_size, output_dim=latent_dim + 2, depth=depth
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1)) if predict_conf else None

    def prepare(self, query_points: torch.Tensor, fmaps: torch.Tensor) -> tuple[TrackerContext, TrackerState]:
        """Normalise the maps, build the pyramid and the initial state from queries [B,N,2] (input pixels)."""
        if not query_points.is_floating_point() or query_points.dtype == torch.float64:
            query_points = query_points.to(torch.float32)
        batch, points, _ = query_points.shape
        frames, height, width = fmaps.shape[1], fmaps.shape[3], fmaps.shape[4]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        queries = query_points / float(self.stride)  # no half-pixel shift (trap T14)
        coords = queries.reshape(batch, 1, points, 2).repeat(1, frames, 1, 1)
        query_feats = sample_at_points(fmaps[:, 0], queries)  # from the normalised frame-0 map
        feats = query_feats.unsqueeze(1).repeat(1, frames, 1, 1)

        table = sincos_position_table(self.transformer_dim, height, width).to(queries.device)
        position = sample_at_points(table.expand(batch, -1, -1, -1), queries).reshape(batch * points, 1, -1)
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)
        return TrackerContext(queries, pyramid, position), TrackerState(coords, feats)

    def step(self, context: TrackerContext, state: TrackerState) -> TrackerState:
        """One refinement iteration: correlation + flow embedding -> update former -> new coords and feats."""
        coords, feats = state.coords, state.feats
        batch, frames, points, channels = feats.shape

        corr = context.pyramid.lookup(feats, coords)
        corr = self.corr_mlp(corr.permute(0, 2, 1, 3).reshape(batch * points, frames, corr.shape[-1]))

        flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(batch * points, frames, 2)
        flow_emb = flow_embedding(flows, channels // 2)
        raw = flows / MAX_SCALE
        feats_rows = feats.permute(0, 2, 1, 3).reshape(batch * points, frames, channels)
        x = torch.cat([flow_emb, raw, raw, corr, feats_rows], dim=2)  # trap T3 order
        x = x + context.position
        ref = self.query_ref_token  # frame 0 gets token 0, every later frame token 1 (trap T8)
        ref = torch.cat([ref[:, 0:1], ref[:, 1:2].expand(-1, frames - 1, -1)], dim=1)
        x = x + ref.to(device=x.device, dtype=x.dtype)

        delta = self.updateformer(x.reshape(batch, points, frames, -1))
        delta = delta.reshape(batch * points, frames, channels + 2)
        delta_feats = delta[:, :, 2:].reshape(batch * points * frames, channels)
        feats_rows = feats_rows.reshape(batch * points * frames, channels)
        # ffeat_norm normalises the update Δf, not the features; frame-0 features are updated too.
        new_feats = self.ffeat_updater(self.ffeat_norm(delta_feats)) + feats_rows
        new_feats = new_feats.reshape(batch, points, frames, channels).permute(0, 2, 1, 3)

        new_coords = coords + delta[:, :, :2].reshape(batch, points, frames, 2).permute(0, 2, 1, 3)
        new_coords[:, 0] = context.queries  # frame 0 stays exactly at the query (trap T18)
        return TrackerState(new_coords, new_feats)

    def predict_visibility(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sigmoid vis and conf [B,S,N] from the final track features [B,S,N,C]."""
        batch, frames, points, channels = feats.shape
        rows = feats.reshape(batch * frames * points, channels)
        vis = torch.sigmoid(self.vis_predictor(rows).reshape(batch, frames, points))
        if self.conf_predictor is None:
            return vis, None
        return vis, torch.sigmoid(self.conf_predictor(rows).reshape(batch, frames, points))

    def forward(
        self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """query_points [B,N,2] input pixels on frame 0, fmaps [B,S,C,HH,WW] ->
        (per-iteration tracks [B,S,N,2] in input pixels, vis [B,S,N], conf [B,S,N])."""
        context, state = self.prepare(query_points, fmaps)
        tracks = []
        for _ in range(iters):
            state = self.step(context, state)
            tracks.append(state.coords * self.stride)
        vis, conf = self.predict_visibility(state.feats)
        return tracks, vis, conf

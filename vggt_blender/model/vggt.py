"""The full VGGT model (VGGT_SPEC §1) with the official state-dict layout.

aggregator -> camera head (pose encodings), depth head, point head, and the track head on request.
Under CUDA/CPU autocast the aggregator runs in low precision while the camera, depth and point heads
run with autocast disabled (fp32), like the official model; the track head runs under the caller's
autocast. `set_execution(ExecutionMode.lean(...))` switches the same modules to the memory-lean arrangement
(model/execution.py).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import VGGTConfig
from .dpt_head import DPTHead
from .execution import PLAIN, ExecutionMode, apply_execution
from .track_head import TrackHead


def _autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that turns autocast off for `device`'s type (a no-op where autocast is unsupported)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


class VGGT(nn.Module):
    def __init__(
        self,
        config: VGGTConfig | None = None,
        enable_camera: bool = True,
        enable_depth: bool = True,
        enable_point: bool = True,
        enable_track: bool = True,
    ) -> None:
        super().__init__()
        self.config = config = config or VGGTConfig.vggt_1b()
        config.validate()
        dim_in = 2 * config.embed_dim
        self.aggregator = Aggregator(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            num_register_tokens=config.num_register_tokens,
            qk_norm=config.qk_norm,
            rope_freq=config.rope_freq,
            patch_embed=config.patch_embed,
        )
        cam = config.camera_head
        self.camera_head = (
            CameraHead(
                dim_in,
                trunk_depth=cam.trunk_depth,
                num_heads=cam.num_heads,
                mlp_ratio=cam.mlp_ratio,
                iterations=cam.iterations,
                layer_idx=config.depth - 1,
            )
            if enable_camera
            else None
        )
        dpt = config.dpt_head
        dpt_args = dict(
            patch_size=config.patch_size,
            features=dpt.features,
            out_channels=dpt.out_channels,
            intermediate_layer_idx=dpt.intermediate_layer_idx,
        )
        self.point_head = (
            DPTHead(dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt_args)
            if enable_point
            else None
        )
        self.depth_head = (
            DPTHead(dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt_args)
            if enable_depth
            else None
        )
        self.track_head = None
        if enable_track:
            trk = config.track_head
            # The track head's DPT taps the same layers as the depth/point heads.
            self.track_head = TrackHead(
                dim_in=dim_in,
                patch_size=config.patch_size,
                features=trk.features,
                out_channels=list(trk.out_channels),
                hidden_size=trk.hidden_size,
                corr_levels=trk.corr_levels,
                corr_radius=trk.corr_radius,
                iters=trk.iters,
                stride=trk.stride,
                intermediate_layer_idx=list(dpt.intermediate_layer_idx),
            )

        self.execution: ExecutionMode = PLAIN

    def set_execution(self, execution: ExecutionMode) -> "VGGT":
        """Use `execution` from now on (execution.apply_execution)."""
        return apply_execution(self, execution)

    def needed_layers(self, with_tracks: bool) -> list[int]:
        """Aggregator steps the enabled heads read (absolute indices)."""
        layers: set[int] = set()
        if self.camera_head is not None:
            layers.add(self.camera_head.layer_idx)
        for head in (self.depth_head, self.point_head):
            if head is not None:
                layers.update(head.intermediate_layer_idx)
        if with_tracks and self.track_head is not None:
            layers.update(self.track_head.feature_extractor.intermediate_layer_idx)
        return sorted(layers)

    def forward(
        self,
        images: Tensor,
        query_points: Tensor | None = None,
        frames_chunk_size: int | None = 8,
        execution: ExecutionMode | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        """images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1]; query_points [N, 2] or [B, N, 2] (x, y) pixels.

        `execution` (default: the mode set with `set_execution`) may be lean only when the model's matrices
        already are in its dtype. In the lean mode the images may stay on the host, the dense heads run
        over `head_frames` frames at a time, and outputs are on the model's device.

        Returns pose_enc [B,S,9], pose_enc_list, depth [B,S,H,W,1], depth_conf [B,S,H,W],
        world_points [B,S,H,W,3], world_points_conf [B,S,H,W], with query points also track [B,S,N,2],
        vis and conf [B,S,N], and in eval mode the input images.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S,3,H,W] or [B,S,3,H,W], got shape {tuple(images.shape)}")
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        with_tracks = query_points is not None and self.track_head is not None
        execution = self.execution if execution is None else execution
        device = self.aggregator.camera_token.device
        if execution.lean:
            frames_chunk_size = execution.head_frames
            if query_points is not None:
                query_points = query_points.to(device)

        tokens, patch_start_idx = self.aggregator(images, keep_layers=self.needed_layers(with_tracks),
                                                  execution=execution)

        predictions: dict[str, Tensor | list[Tensor]] = {}
        # The geometry heads run in fp32 even when the caller enabled autocast.
        with _autocast_disabled(device):
            if self.camera_head is not None:
                pose_enc_list = self.camera_head(tokens)
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            if self.depth_head is not None:
                depth, depth_conf = self.depth_head(tokens, images, patch_start_idx, frames_chunk_size)
                predictions["depth"] = depth
                predictions["depth_conf"] = depth_conf
            if self.point_head is not None:
                points, points_conf = self.point_head(tokens, images, patch_start_idx, frames_chunk_size)
                predictions["world_points"] = points
                predictions["world_points_conf"] = points_conf

        if with_tracks:
            track_list, vis, conf = self.track_head(tokens, images, patch_start_idx, query_points,
                                                    frames_chunk_size=frames_chunk_size)
            predictions["track"] = track_list[-1]
            predictions["vis"] = vis
            predictions["conf"] = conf
        del tokens

        if not self.training:
            predictions["images"] = images
        return predictions

"""The full VGGT-Omega model (VGGT_OMEGA_SPEC §1) with the official state-dict layout.

aggregator -> camera head (pose_enc), depth head (depth, depth_conf), optional text-alignment head, plus
`camera_and_register_tokens` (the last layer's special tokens). As the official model: on CUDA the
aggregator runs under autocast (bf16, fp16 where bf16 is missing) and the heads in fp32; on the CPU
everything is float32 unless the caller enabled autocast. Only the layers the heads read are kept.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .omega_aggregator import OmegaAggregator
from .omega_camera_head import OmegaCameraHead
from .omega_config import VGGTOmegaConfig
from .omega_depth_head import OmegaDepthHead
from .omega_text_head import OmegaTextAlignmentHead
from .vggt import _autocast_disabled


def cuda_autocast_dtype() -> torch.dtype:
    """What the official model autocasts its aggregator to on CUDA: bf16, or fp16 without bf16 support."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _aggregator_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=cuda_autocast_dtype())


class VGGTOmega(nn.Module):
    def __init__(self, config: VGGTOmegaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VGGTOmegaConfig.omega_1b_512()
        config.validate()
        dim_in = 2 * config.embed_dim
        last = config.depth - 1
        self.aggregator = OmegaAggregator(config)
        cam = config.camera_head
        self.camera_head = (
            OmegaCameraHead(dim_in, last, cam.trunk_depth, cam.num_heads, cam.mlp_ratio) if cam is not None else None
        )
        dense = config.dense_head
        self.dense_head = (
            OmegaDepthHead(dim_in, config.patch_size, dense.features, dense.out_channels, dense.intermediate_layer_idx)
            if dense is not None
            else None
        )
        text = config.text_alignment_head
        self.text_alignment_head = (
            OmegaTextAlignmentHead(dim_in, last, text.depth, text.num_heads, text.mlp_ratio)
            if text is not None
            else None
        )

    def needed_layers(self) -> list[int]:
        """Aggregator layers the outputs read (absolute indices): the last one and the depth taps."""
        return self.config.head_layers

    def forward(
        self,
        images: Tensor,
        frames_chunk_size: int | None = None,
        cuda_autocast: bool = True,
    ) -> dict[str, Tensor]:
        """images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1].

        Returns camera_and_register_tokens [B,S,1+R,2C], pose_enc [B,S,9], depth [B,S,H,W,1],
        depth_conf [B,S,H,W], with the text head text_alignment_embedding and text_alignment_token
        [B,2C], and in eval mode the input images. `frames_chunk_size` (default: the config's, 8) is the
        depth head's frames per chunk; `cuda_autocast=False` runs a CUDA aggregator without autocast.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S,3,H,W] or [B,S,3,H,W], got shape {tuple(images.shape)}")
        with _aggregator_autocast(images.device, cuda_autocast):
            tokens, patch_start_idx = self.aggregator(images, keep_layers=self.needed_layers())

        final = tokens[self.config.depth - 1]
        predictions: dict[str, Tensor] = {"camera_and_register_tokens": final[:, :, :patch_start_idx].contiguous()}
        with _autocast_disabled(images.device):  # the heads run in fp32 even under the caller's autocast
            if self.camera_head is not None:
                predictions["pose_enc"] = self.camera_head(tokens, patch_start_idx)
            if self.dense_head is not None:
                chunk = frames_chunk_size or self.config.dense_head.frames_chunk_size
                depth, depth_conf = self.dense_head(tokens, images.shape, patch_start_idx, chunk)
                predictions["depth"] = depth
                predictions["depth_conf"] = depth_conf
            if self.text_alignment_head is not None:
                predictions.update(self.text_alignment_head(tokens, patch_start_idx))
        del tokens
        if not self.training:
            predictions["images"] = images
        return predictions

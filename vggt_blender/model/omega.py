"""The full VGGT-Omega model (VGGT_OMEGA_SPEC §1) with the official state-dict layout.

aggregator -> camera head (pose_enc), depth head (depth, depth_conf), optional text-alignment head, plus
`camera_and_register_tokens` (the last layer's special tokens). As the official model: on CUDA the
aggregator runs under autocast (bf16, fp16 where bf16 is missing) and the heads in fp32; on the CPU
everything is float32 unless the caller enabled autocast. Only the layers the heads read are kept.
"""

from __future__ import annotations

import contextlib
from typing import Any

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
        # How the modules execute (model/execution.py): None is the plain path.
        self.execution: Any = None

    def set_execution(self, execution: Any) -> "VGGTOmega":
        """Use `execution` (an ExecutionMode) from now on; the aggregator's matrices are cast to its dtype,
        the heads stay float32. The lean mode is the memory-lean inference arrangement of the same modules."""
        from .execution import apply_execution

        return apply_execution(self, execution)

    def needed_layers(self) -> list[int]:
        """Aggregator layers the outputs read (absolute indices): the last one and the depth taps."""
        return self.config.head_layers

    def forward(
        self,
        images: Tensor,
        frames_chunk_size: int | None = None,
        cuda_autocast: bool = True,
        execution: Any = None,
    ) -> dict[str, Tensor]:
        """images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1].

        Returns camera_and_register_tokens [B,S,1+R,2C], pose_enc [B,S,9], depth [B,S,H,W,1],
        depth_conf [B,S,H,W], with the text head text_alignment_embedding and text_alignment_token
        [B,2C], and in eval mode the input images. `frames_chunk_size` (default: the config's, 8) is the
        depth head's frames per chunk; `cuda_autocast=False` runs a CUDA aggregator without autocast.
        `execution` (default: the mode set with `set_execution`): in the lean mode (matrices already in its
        dtype, no autocast needed) the images may stay on the host, the depth head runs over `head_frames`
        frames at a time into preallocated outputs, and the outputs are on the model's device.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S,3,H,W] or [B,S,3,H,W], got shape {tuple(images.shape)}")
        execution = self.execution if execution is None else execution
        lean = execution is not None and execution.lean
        device = self.aggregator.camera_token.device
        if lean:
            frames_chunk_size = execution.head_frames or images.shape[1]
            autocast = contextlib.nullcontext()  # the lean mode does the official casts itself
        else:
            autocast = _aggregator_autocast(images.device, cuda_autocast)
        with autocast:
            tokens, patch_start_idx = self.aggregator(images, keep_layers=self.needed_layers(), execution=execution)

        final = tokens[self.config.depth - 1]
        special = final[:, :, :patch_start_idx]
        # float32 as the official model's residual stream under autocast (the lean mode keeps layers in its dtype).
        special = special.float() if lean else special
        predictions: dict[str, Tensor] = {"camera_and_register_tokens": special.contiguous()}
        with _autocast_disabled(device):  # the heads run in fp32 even under the caller's autocast
            if self.camera_head is not None:
                predictions["pose_enc"] = self.camera_head(tokens, patch_start_idx)
            if self.dense_head is not None:
                chunk = frames_chunk_size or self.config.dense_head.frames_chunk_size
                out = self._dense_outputs(images.shape, device) if lean else None
                depth, depth_conf = self.dense_head(tokens, images.shape, patch_start_idx, chunk, out=out)
                predictions["depth"] = depth
                predictions["depth_conf"] = depth_conf
            if self.text_alignment_head is not None:
                predictions.update(self.text_alignment_head(tokens, patch_start_idx))
        del tokens
        if not self.training:
            predictions["images"] = images
        return predictions

    def _dense_outputs(self, image_shape: Any, device: torch.device) -> tuple[Tensor, Tensor]:
        """Preallocated float32 depth [B,S,H',W',1] and confidence [B,S,H',W'] (H' = patch * (H // patch))."""
        batch, frames, _, height, width = image_shape
        patch = self.config.patch_size
        size = (patch * (height // patch), patch * (width // patch))
        return (torch.empty(batch, frames, *size, 1, device=device),
                torch.empty(batch, frames, *size, device=device))

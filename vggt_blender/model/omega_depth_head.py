"""VGGT-Omega's depth head (VGGT_OMEGA_SPEC §5): the DPT front end shared with v1, a new back end.

Taps -> norm, projects (+ UV embedding), resize -> fusion (refinenet1 stays at 4h x 4w; the residual
units' ReLU is not in place) -> + UV embedding on the fused map -> 1x1 convs to f^2 channels ->
pixel shuffle x f (f = patch_size / 4) -> depth = exp, confidence = 1 + exp.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dpt_head import build_front_end, tap_maps
from .uv_embedding import add_uv_embedding


class OmegaDepthHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        patch_size: int = 16,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
    ) -> None:
        super().__init__()
        if patch_size % 4:
            raise ValueError(f"the depth head needs a patch size divisible by 4, got {patch_size}")
        self.patch_size = patch_size
        self.shuffle = patch_size // 4
        self.intermediate_layer_idx = list(intermediate_layer_idx)
        build_front_end(self, dim_in, out_channels, features, relu_skip=False)
        self.proj = nn.Conv2d(features, self.shuffle**2, kernel_size=1)
        self.proj_conf = nn.Conv2d(features, self.shuffle**2, kernel_size=1)

    def forward(self, tokens: Mapping[int, Tensor], image_shape: Sequence[int], patch_start_idx: int,
                frames_chunk_size: int | None = 8, out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """tokens[layer] [B, S, P, 2C]; image_shape (B, S, 3, H, W) -> depth [B, S, H', W', 1], conf [B, S, H', W'].

        Frames go through in chunks of `frames_chunk_size` (the head is per frame). `out`: preallocated
        (depth, conf) tensors to write each chunk into (memory-lean runs); otherwise chunks are concatenated.
        """
        batch, frames, _, height, width = image_shape
        step = frames if not frames_chunk_size or frames_chunk_size >= frames else int(frames_chunk_size)
        depths, confs = [], []
        for lo in range(0, frames, step):
            hi = min(lo + step, frames)
            depth, conf = self._forward_frames(tokens, batch, lo, hi, height, width, patch_start_idx)
            if out is not None:
                out[0][:, lo:hi] = depth
                out[1][:, lo:hi] = conf
            else:
                depths.append(depth)
                confs.append(conf)
            del depth, conf
        if out is not None:
            return out
        if len(depths) == 1:
            return depths[0], confs[0]
        return torch.cat(depths, dim=1), torch.cat(confs, dim=1)

    def _forward_frames(self, tokens: Mapping[int, Tensor], batch: int, start: int, end: int, height: int,
                        width: int, patch_start_idx: int) -> tuple[Tensor, Tensor]:
        grid = (height // self.patch_size, width // self.patch_size)
        maps = tap_maps(self, tokens, self.intermediate_layer_idx, patch_start_idx, start, end, grid, (width, height))
        s = self.scratch
        r1, r2, r3, r4 = (getattr(s, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        del maps
        fused = s.refinenet4(r4, size=r3.shape[2:])
        fused = s.refinenet3(fused, r3, size=r2.shape[2:])
        fused = s.refinenet2(fused, r2, size=r1.shape[2:])
        fused = s.refinenet1(fused, r1, size=r1.shape[2:])
        del r1, r2, r3, r4
        fused = add_uv_embedding(fused, width, height)
        depth = torch.exp(F.pixel_shuffle(self.proj(fused), self.shuffle).permute(0, 2, 3, 1))  # [N, H', W', 1]
        conf = 1.0 + torch.exp(F.pixel_shuffle(self.proj_conf(fused), self.shuffle)[:, 0])  # [N, H', W']
        frames = end - start
        return depth.reshape(batch, frames, *depth.shape[1:]), conf.reshape(batch, frames, *conf.shape[1:])

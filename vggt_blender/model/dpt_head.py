"""DPT dense head (VGGT_SPEC §5): depth head, point head, and the track head's feature extractor.

Four taps of aggregated tokens -> multi-scale maps -> RefineNet-style fusion -> a map at the input
resolution / down_ratio. Frames are processed in chunks; the head is strictly per frame.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head_activations import activate_dense
from .uv_embedding import add_uv_embedding

# Above this many output elements, interpolate in batch chunks (int32 indexing limits in some kernels).
_INTERPOLATE_LIMIT = 1_610_612_736


def interpolate_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, align_corners=True, split along the batch when the output would be very large."""
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= _INTERPOLATE_LIMIT:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    chunks = torch.chunk(x, elements // _INTERPOLATE_LIMIT + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks], dim=0)


class ResidualConvUnit(nn.Module):
    """ReLU -> conv3x3 -> ReLU -> conv3x3, plus a skip.

    The official VGGT unit uses an in-place ReLU on its input, so its skip carries ReLU(x), not x. That is
    reproduced here explicitly (out of place): RCU(x) = conv2(relu(conv1(relu(x)))) + relu(x).
    VGGT-Omega's ReLU is not in place: `relu_skip=False` gives RCU(x) = conv2(relu(conv1(relu(x)))) + x.
    """

    def __init__(self, features: int, relu_skip: bool = True) -> None:
        super().__init__()
        self.relu_skip = relu_skip
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(x)  # out of place: the caller's tensor is left alone
        out = self.conv2(F.relu(self.conv1(activated), inplace=True))  # conv1's output is ours to overwrite
        return out.add_(activated if self.relu_skip else x)


class FeatureFusionBlock(nn.Module):
    """(running + RCU1(skip)) -> RCU2 -> bilinear resize (align_corners) -> 1x1 out_conv."""

    def __init__(self, features: int, has_residual: bool = True, relu_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features, relu_skip) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features, relu_skip)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if self.resConfUnit1 is not None and skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        x = interpolate_bilinear(x, tuple(size))
        return self.out_conv(x)


def build_front_end(head: nn.Module, dim_in: int, out_channels: Sequence[int], features: int,
                    relu_skip: bool = True) -> None:
    """The DPT parts VGGT and VGGT-Omega share, as attributes of `head` (official key names): norm,
    projects (1x1 convs), resize_layers (x4, x2, x1, /2), scratch.layer{1..4}_rn and refinenet{1..4}."""
    out_channels = list(out_channels)
    head.norm = nn.LayerNorm(dim_in)
    head.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, kernel_size=1) for oc in out_channels)
    # Tap k is brought to 4x, 2x, 1x and 1/2x the patch grid.
    head.resize_layers = nn.ModuleList(
        [
            nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
        ]
    )
    head.scratch = nn.Module()
    for i, oc in enumerate(out_channels, start=1):
        setattr(head.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, kernel_size=3, padding=1, bias=False))
    head.scratch.refinenet1 = FeatureFusionBlock(features, relu_skip=relu_skip)
    head.scratch.refinenet2 = FeatureFusionBlock(features, relu_skip=relu_skip)
    head.scratch.refinenet3 = FeatureFusionBlock(features, relu_skip=relu_skip)
    head.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False, relu_skip=relu_skip)


def tap_maps(head: nn.Module, tokens: Mapping[int, Tensor] | Sequence[Tensor], layers: Sequence[int],
             patch_start_idx: int, start: int, end: int, grid: tuple[int, int], image_size: tuple[int, int],
             pos_embed: bool = True) -> list[Tensor]:
    """Frames start..end of each tapped layer's patch tokens -> norm -> map -> project (+ UV) -> resize.

    tokens[layer] [B, S, P, 2C]; grid (h, w); image_size (width, height). Returns the 4 maps, finest first.
    """
    grid_h, grid_w = grid
    width, height = image_size
    dtype = head.norm.weight.dtype
    maps = []
    for k, layer_idx in enumerate(layers):
        x = tokens[layer_idx][:, start:end, patch_start_idx:].to(dtype)  # [B, s, h*w, 2C]
        x = head.norm(x.reshape(-1, x.shape[-2], x.shape[-1]))
        x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], grid_h, grid_w)  # [N, 2C, h, w]
        x = head.projects[k](x)
        if pos_embed:
            x = add_uv_embedding(x, width, height)
        maps.append(head.resize_layers[k](x))
    return maps


class DPTHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        out_channels = list(out_channels)
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = list(intermediate_layer_idx)

        build_front_end(self, dim_in, out_channels, features)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, kernel_size=1),
            )

    def forward(
        self,
        tokens: Mapping[int, Tensor] | Sequence[Tensor],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tokens[layer] [B, S, P, 2C]; images [B, S, 3, H, W] (only its shape is used).

        Returns features [B, S, F, H/d, W/d] when feature_only,
        else (values [B, S, H, W, output_dim-1], conf [B, S, H, W]).
        """
        frames = images.shape[1]
        step = frames if not frames_chunk_size or frames_chunk_size >= frames else frames_chunk_size
        # Each chunk's results go straight into outputs allocated after the first chunk (no concat copy).
        outputs: list[Tensor] | None = None
        for s in range(0, frames, step):
            chunk = self._forward_frames(tokens, images, patch_start_idx, s, min(s + step, frames))
            parts = [chunk] if self.feature_only else list(chunk)
            if step == frames:
                outputs = parts
                break
            if outputs is None:
                outputs = [p.new_empty((p.shape[0], frames, *p.shape[2:])) for p in parts]
            for out, part in zip(outputs, parts):
                out[:, s:s + part.shape[1]] = part
            del chunk, parts
        return outputs[0] if self.feature_only else (outputs[0], outputs[1])

    def _forward_frames(
        self, tokens: Mapping[int, Tensor] | Sequence[Tensor], images: Tensor, patch_start_idx: int, start: int, end: int
    ) -> Tensor | tuple[Tensor, Tensor]:
        batch = images.shape[0]
        frames = end - start
        height, width = images.shape[-2:]
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        maps = tap_maps(self, tokens, self.intermediate_layer_idx, patch_start_idx, start, end, (grid_h, grid_w),
                        (width, height), self.pos_embed)

        out = self._fuse(maps)  # [N, F', 8h, 8w]
        out_size = (int(grid_h * self.patch_size / self.down_ratio), int(grid_w * self.patch_size / self.down_ratio))
        out = interpolate_bilinear(out, out_size)
        if self.pos_embed:
            out = add_uv_embedding(out, width, height)
        if self.feature_only:
            return out.reshape(batch, frames, *out.shape[1:])

        out = self.scratch.output_conv2(out)
        values, conf = activate_dense(out, self.activation, self.conf_activation)
        return values.reshape(batch, frames, *values.shape[1:]), conf.reshape(batch, frames, *conf.shape[1:])

    def _fuse(self, maps: list[Tensor]) -> Tensor:
        """Four tap maps (finest first) -> fused map at 2x the finest size. Empties `maps` as it goes."""
        s = self.scratch
        r1 = s.layer1_rn(maps.pop(0))
        r2 = s.layer2_rn(maps.pop(0))
        r3 = s.layer3_rn(maps.pop(0))
        r4 = s.layer4_rn(maps.pop(0))
        out = s.refinenet4(r4, size=r3.shape[2:])
        del r4
        out = s.refinenet3(out, r3, size=r2.shape[2:])
        del r3
        out = s.refinenet2(out, r2, size=r1.shape[2:])
        del r2
        out = s.refinenet1(out, r1)
        del r1
        return s.output_conv1(out)

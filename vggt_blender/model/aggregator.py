"""The alternating-attention aggregator (VGGT_SPEC §3).

Per frame: [camera(1), registers(R), patches(h*w)] tokens. Each of `depth` steps runs one frame block
(attention inside a frame) and one global block (attention over all frames of a scene). The output of
step i is concat(frame_out_i, global_out_i) along channels, [B, S, P, 2C]. Only the steps some head
reads are kept (memory: the official model keeps all of them).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .config import PatchEmbedConfig
from .dinov2 import DinoV2Encoder
from .execution import ExecutionMode, is_lean
from .layers import Block, PatchEmbed
from .rope import RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        qk_norm: bool = True,
        rope_freq: float = 100.0,
        init_values: float = 0.01,
        patch_embed: PatchEmbedConfig | None = None,
    ) -> None:
        super().__init__()
        pe = patch_embed or PatchEmbedConfig(embed_dim=embed_dim)
        if pe.type == "conv":
            self.patch_embed: nn.Module = PatchEmbed(patch_size, embed_dim)
        elif pe.type == "dinov2_reg":
            self.patch_embed = DinoV2Encoder(
                img_size=img_size,
                patch_size=patch_size,
                embed_dim=pe.embed_dim,
                depth=pe.depth,
                num_heads=pe.num_heads,
                mlp_ratio=pe.mlp_ratio,
                num_register_tokens=pe.num_register_tokens,
            )
        else:
            raise ValueError(f"unknown patch embed type '{pe.type}'")

        self.rope = RotaryPositionEmbedding2D(rope_freq) if rope_freq > 0 else None

        def make_block() -> Block:
            return Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, qk_norm=qk_norm, rope=self.rope)

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(depth))

        # Index 0 is for the first frame of each scene (the reference), index 1 for all the others.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, num_register_tokens, embed_dim))
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)

        self.depth = depth
        self.patch_size = patch_size
        self.patch_start_idx = 1 + num_register_tokens
        # The ImageNet constants are made per call (not buffers): a model built on the meta device and
        # loaded with assign=True would otherwise keep meta buffers.

    def forward(
        self, images: Tensor, keep_layers: Iterable[int] | None = None, execution: ExecutionMode | None = None
    ) -> tuple[dict[int, Tensor], int]:
        """images [B, S, 3, H, W] in [0, 1] -> ({layer: [B, S, P, 2C]}, patch_start_idx).

        `keep_layers`: absolute step indices to return (None: all `depth` steps). In the lean mode the images
        may be on another device (moved per chunk of frames) and the kept layers are in the mode's dtype.
        """
        batch, frames, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(f"expected 3 input channels, got {channels}")
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        keep = set(range(self.depth)) if keep_layers is None else {int(i) for i in keep_layers}
        bad = [i for i in keep if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"layer indices {sorted(bad)} are outside 0..{self.depth - 1}")
        if is_lean(execution):
            with torch.no_grad():
                return self._forward_lean(images, sorted(keep), execution), self.patch_start_idx

        normalized = imagenet_normalize(images).reshape(batch * frames, 3, height, width)
        # fp32 like the official buffers; a model held in bf16/fp16 (no autocast) gets its own dtype.
        normalized = normalized.to(self.camera_token.dtype)
        patches = self.patch_embed(normalized)  # [B*S, h*w, C]
        del normalized

        camera = _first_and_rest(self.camera_token, batch, frames)  # [B*S, 1, C]
        registers = _first_and_rest(self.register_token, batch, frames)  # [B*S, R, C]
        tokens = torch.cat([camera, registers, patches], dim=1)  # [B*S, P, C]
        del patches
        _, num_tokens, dim = tokens.shape

        pos = None
        if self.rope is not None:
            grid_h, grid_w = height // self.patch_size, width // self.patch_size
            pos = patch_positions(batch * frames, grid_h, grid_w, self.patch_start_idx, images.device)
        frame_pos = pos  # [B*S, P, 2]
        global_pos = pos.reshape(batch, frames * num_tokens, 2) if pos is not None else None  # [B, S*P, 2]

        outputs: dict[int, Tensor] = {}
        last = max(keep) if keep else -1
        for i in range(last + 1):
            tokens = self.frame_blocks[i](tokens.reshape(batch * frames, num_tokens, dim), pos=frame_pos)
            frame_out = tokens
            tokens = self.global_blocks[i](tokens.reshape(batch, frames * num_tokens, dim), pos=global_pos)
            if i in keep:
                outputs[i] = torch.cat(
                    [
                        frame_out.reshape(batch, frames, num_tokens, dim),
                        tokens.reshape(batch, frames, num_tokens, dim),
                    ],
                    dim=-1,
                )  # [B, S, P, 2C]
            del frame_out
        return outputs, self.patch_start_idx

    def _positions(self, rows: int, grid_h: int, grid_w: int, device: torch.device) -> Tensor | None:
        if self.rope is None:
            return None
        return patch_positions(rows, grid_h, grid_w, self.patch_start_idx, device)

    def _forward_lean(self, images: Tensor, keep: list[int], execution: ExecutionMode) -> dict[int, Tensor]:
        """The same steps with one in-place residual stream and preallocated outputs for the kept layers only."""
        batch, frames, _, height, width = images.shape
        device = self.camera_token.device
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        start = self.patch_start_idx
        num_tokens = start + grid_h * grid_w
        dim = self.camera_token.shape[-1]
        rows = batch * frames

        # [B*S, P, C] is the same memory as [B, S*P, C]: frame and global blocks take views of one tensor.
        x = torch.empty(rows, num_tokens, dim, dtype=execution.residual_dtype, device=device)
        fill_special_tokens(x, self.camera_token, self.register_token, batch, frames)

        def embed(chunk: Tensor) -> Tensor:
            if isinstance(self.patch_embed, DinoV2Encoder):
                return self.patch_embed(chunk, execution=execution)
            return self.patch_embed(chunk)

        extra = 1 + getattr(self.patch_embed, "num_register_tokens", -1)  # DINO's cls + registers (0 for conv)
        embed_frames_lean(images, x[:, start:], execution.token_chunk, extra, embed)

        pos = self._positions(rows, grid_h, grid_w, device)
        global_pos = pos.reshape(batch, frames * num_tokens, 2) if pos is not None else None
        outputs = {i: torch.empty(batch, frames, num_tokens, 2 * dim, dtype=execution.dtype, device=device)
                   for i in keep}
        x4 = x.view(batch, frames, num_tokens, dim)
        for i in range(keep[-1] + 1 if keep else 0):
            self.frame_blocks[i](x, pos=pos, execution=execution)
            if i in outputs:
                outputs[i][..., :dim].copy_(x4)
            self.global_blocks[i](x.view(batch, frames * num_tokens, dim), pos=global_pos, execution=execution)
            if i in outputs:
                outputs[i][..., dim:].copy_(x4)
        return outputs


def imagenet_normalize(images: Tensor) -> Tensor:
    """(images - mean) / std over the colour axis [..., 3, H, W], in float32, as both model families take it.
    The constants are made per call, not buffers: a meta-built model loaded with assign=True keeps no meta buffer."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def fill_special_tokens(x: Tensor, camera_token: Tensor, register_token: Tensor, batch: int, frames: int) -> None:
    """The lean residual stream x [B*S, P, C]: camera token at 0, the register tokens after it."""
    x[:, :1] = _first_and_rest(camera_token, batch, frames)
    x[:, 1:1 + register_token.shape[2]] = _first_and_rest(register_token, batch, frames)


def embed_frames_lean(images: Tensor, out: Tensor, token_chunk: int, prefix_tokens: int,
                      embed: Callable[[Tensor], Tensor]) -> None:
    """Normalize and patch-embed chunks of frames (moved to out's device here) into out [B*S, h*w, C]; a chunk
    holds about `token_chunk` tokens, counting the encoder's own `prefix_tokens` per frame."""
    batch, frames, _, height, width = images.shape
    flat = images.reshape(batch * frames, 3, height, width)
    per = max(1, token_chunk // (out.shape[1] + prefix_tokens))
    for lo in range(0, flat.shape[0], per):
        hi = min(lo + per, flat.shape[0])
        chunk = imagenet_normalize(flat[lo:hi].to(device=out.device, dtype=torch.float32, non_blocking=True))
        out[lo:hi] = embed(chunk)
        del chunk


def _first_and_rest(token: Tensor, batch: int, frames: int) -> Tensor:
    """[1, 2, X, C] -> [B*S, X, C]: slot 0 for frame 0 of each scene, slot 1 for frames 1..S-1."""
    first = token[:, :1].expand(batch, 1, *token.shape[2:])
    rest = token[:, 1:].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(batch * frames, *token.shape[2:])

"""VGGT-Omega's alternating-attention aggregator (VGGT_OMEGA_SPEC §3).

Per frame: [camera(1), registers(R), patches(h*w)]. Each of `depth` layers runs a frame block (inside each
frame, with RoPE) and an inter-frame block without RoPE: "global" (all tokens of all frames of a scene)
or, at `register_attention_block_indices`, "register" (only the 1 + R special tokens of every frame attend;
patch tokens pass unchanged). Layer i's output is concat(frame_out_i, inter_out_i), [B, S, P, 2C]; only
the requested layers are kept.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .aggregator import _first_and_rest, embed_frames_lean, fill_special_tokens, imagenet_normalize
from .layers import Block
from .omega_config import VGGTOmegaConfig
from .omega_patch_embed import LAYERSCALE_INIT, OMEGA_NORM_EPS, DinoV3Encoder
from .omega_rope import OmegaRopeApply, OmegaRopeTables


class OmegaAggregator(nn.Module):
    def __init__(self, config: VGGTOmegaConfig) -> None:
        super().__init__()
        dim, heads = config.embed_dim, config.num_heads
        pe = config.patch_embed
        self.patch_embed = DinoV3Encoder(
            patch_size=config.patch_size,
            embed_dim=dim,
            depth=pe.depth,
            num_heads=pe.num_heads,
            mlp_ratio=pe.mlp_ratio,
            num_storage_tokens=pe.num_storage_tokens,
            rope_base=pe.rope_base,
        )
        self.rope_embed = OmegaRopeTables(dim // heads, config.rope_base)
        rope = OmegaRopeApply()

        def make_block(with_rope: bool) -> Block:
            return Block(dim, heads, config.mlp_ratio, init_values=LAYERSCALE_INIT, qk_norm=True,
                         rope=rope if with_rope else None, norm_eps=OMEGA_NORM_EPS, mask_k_bias=True)

        self.frame_blocks = nn.ModuleList(make_block(True) for _ in range(config.depth))
        self.inter_frame_blocks = nn.ModuleList(make_block(False) for _ in range(config.depth))
        # Index 0 for the first frame of each scene (the reference), index 1 for the others.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, dim))
        nn.init.normal_(self.camera_token, std=1e-3)
        nn.init.normal_(self.register_token, std=1e-3)

        self.depth = config.depth
        self.patch_size = config.patch_size
        self.patch_start_idx = config.num_special_tokens
        self.register_layers = frozenset(config.register_attention_block_indices)
        self.cached_layers = tuple(sorted(set(config.cached_layer_indices)))

    def inter_frame_kind(self, layer: int) -> str:
        return "register" if layer in self.register_layers else "global"

    def forward(self, images: Tensor, keep_layers: Iterable[int] | None = None,
                execution: Any = None) -> tuple[dict[int, Tensor], int]:
        """images [B, S, 3, H, W] in [0, 1] -> ({layer: [B, S, P, 2C]}, patch_start_idx).

        `keep_layers`: the layers to return (default: the configured cached layers); they must be cached
        ones, as the official model has nothing else to give. `execution`: an ExecutionMode
        (model/execution.py); in the lean mode the images may be on the host (moved per chunk of frames),
        one residual stream is updated in place and the kept layers are in the mode's dtype.
        """
        batch, frames, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(f"expected 3 input channels, got {channels}")
        keep = set(self.cached_layers) if keep_layers is None else {int(i) for i in keep_layers}
        bad = sorted(keep - set(self.cached_layers))
        if bad:
            raise ValueError(f"layers {bad} are not cached by this model (cached: {list(self.cached_layers)})")

        if execution is not None and execution.lean:
            with torch.no_grad():
                return self._forward_lean(images, sorted(keep), execution), self.patch_start_idx

        normalized = imagenet_normalize(images).reshape(batch * frames, 3, height, width)
        normalized = normalized.to(self.camera_token.dtype)  # a model held in bf16/fp16 gets its own dtype
        patches = self.patch_embed(normalized)  # [B*S, h*w, C]
        del normalized

        camera = _first_and_rest(self.camera_token, batch, frames)  # [B*S, 1, C]
        registers = _first_and_rest(self.register_token, batch, frames)  # [B*S, R, C]
        tokens = torch.cat([camera, registers, patches], dim=1)  # [B*S, P, C]
        del patches
        _, num_tokens, dim = tokens.shape
        special = self.patch_start_idx

        pos = self.rope_embed(height // self.patch_size, width // self.patch_size, special)  # [1, P, 2, d]

        outputs: dict[int, Tensor] = {}
        last = max(keep) if keep else -1
        for i in range(last + 1):
            tokens = self.frame_blocks[i](tokens.reshape(batch * frames, num_tokens, dim), pos=pos)
            frame_out = tokens.reshape(batch, frames, num_tokens, dim)
            block = self.inter_frame_blocks[i]
            if self.inter_frame_kind(i) == "register":
                specials = block(frame_out[:, :, :special].reshape(batch, frames * special, dim))
                tokens = torch.cat([specials.reshape(batch, frames, special, dim), frame_out[:, :, special:]], dim=2)
            else:
                tokens = block(tokens.reshape(batch, frames * num_tokens, dim))
            tokens = tokens.reshape(batch, frames, num_tokens, dim)
            if i in keep:
                outputs[i] = torch.cat([frame_out, tokens], dim=-1)  # [B, S, P, 2C]
            del frame_out
        return outputs, special

    def _forward_lean(self, images: Tensor, keep: list[int], execution: Any) -> dict[int, Tensor]:
        """The same layers with one in-place residual stream and preallocated outputs for the kept layers."""
        batch, frames, _, height, width = images.shape
        device = self.camera_token.device
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        special = self.patch_start_idx
        num_tokens = special + grid_h * grid_w
        dim = self.camera_token.shape[-1]
        rows = batch * frames

        # [B*S, P, C] is the same memory as [B, S*P, C]: frame and global blocks take views of one tensor.
        x = torch.empty(rows, num_tokens, dim, dtype=execution.residual_dtype, device=device)
        fill_special_tokens(x, self.camera_token, self.register_token, batch, frames)
        embed_frames_lean(images, x[:, special:], execution.token_chunk, self.patch_embed.num_prefix_tokens,
                          lambda chunk: self.patch_embed(chunk, execution=execution))

        pos = self.rope_embed(grid_h, grid_w, special).expand(rows, -1, -1, -1)
        outputs = {i: torch.empty(batch, frames, num_tokens, 2 * dim, dtype=execution.dtype, device=device)
                   for i in keep}
        x4 = x.view(batch, frames, num_tokens, dim)
        for i in range(keep[-1] + 1 if keep else 0):
            self.frame_blocks[i](x, pos=pos, execution=execution)
            if i in outputs:
                outputs[i][..., :dim].copy_(x4)
            block = self.inter_frame_blocks[i]
            if self.inter_frame_kind(i) == "register":
                specials = x.new_empty(batch, frames * special, dim)  # a small contiguous copy
                specials.view(batch, frames, special, dim).copy_(x4[:, :, :special])
                block(specials, execution=execution)
                x4[:, :, :special] = specials.view(batch, frames, special, dim)
                del specials
            else:
                block(x.view(batch, frames * num_tokens, dim), execution=execution)
            if i in outputs:
                outputs[i][..., dim:].copy_(x4)
        return outputs


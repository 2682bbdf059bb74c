"""Transformer building blocks shared by DINOv2, the aggregator and the camera head.

Module and parameter names follow the official state dict (qkv, q_norm, k_norm, proj, fc1, fc2, gamma,
norm1, norm2, ls1, ls2, patch proj).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import RotaryPositionEmbedding2D


class PatchEmbed(nn.Module):
    """Patchify conv: [N,3,H,W] -> [N, (H/p)*(W/p), D], tokens in raster order (row-major)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        _, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        x = self.proj(images)  # [N, D, h, w]
        return x.flatten(2).transpose(1, 2)  # [N, h*w, D]


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        # Out of place on purpose: under autocast a bf16 branch times the fp32 gamma promotes the
        # residual branch to fp32, which keeps the residual stream in fp32 as in the official model.
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MaskedKBiasLinear(nn.Linear):
    """VGGT-Omega's qkv Linear: the bias used is `bias * bias_mask`, a persistent buffer of the checkpoint
    (1 on the q and v thirds, 0 on the k third)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if bias:
            third = out_features // 3
            mask = torch.ones(out_features)
            mask[third : 2 * third] = 0.0
            self.register_buffer("bias_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head qk LayerNorm and 2-D RoPE, via SDPA.

    `mask_k_bias` (VGGT-Omega) makes qkv a MaskedKBiasLinear. `rope` may be any parameter-free module
    called as rope(t, pos) on q and k; VGGT-Omega passes its own (pos = its sin/cos tables).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: RotaryPositionEmbedding2D | None = None,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = (MaskedKBiasLinear if mask_k_bias else nn.Linear)(dim, 3 * dim, bias=qkv_bias)
        # qk-norm uses the PyTorch default eps (1e-5), per head.
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        # One RoPE module (no parameters, so no state-dict keys) is shared by all aggregator blocks.
        self.rope = rope

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        batch, tokens, dim = x.shape
        # qkv channels are [q | k | v], each split into contiguous per-head slices.
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        q = self.q_norm(q)
        k = self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, head_dim]
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        qk_norm: bool = False,
        rope: RotaryPositionEmbedding2D | None = None,
        norm_eps: float = 1e-5,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope,
                              mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x

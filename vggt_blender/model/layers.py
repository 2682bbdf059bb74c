"""Transformer building blocks shared by DINOv2, the aggregator and the camera head.

Module and parameter names follow the official state dict (qkv, q_norm, k_norm, proj, fc1, fc2, gamma,
norm1, norm2, ls1, ls2, patch proj).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .execution import ExecutionMode, as_dtype_of, is_lean, scaled_dot_product, token_slices
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
        x = self.proj(as_dtype_of(images, self.proj))  # [N, D, h, w]
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
        return self.fc2(self.act(self.fc1(as_dtype_of(x, self.fc1))))


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

    def project_qkv(self, x: Tensor, pos: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, N, C] -> q, k, v [B, heads, N, head_dim]; q and k after qk-norm and RoPE (in the norm's dtype)."""
        batch, tokens, _ = x.shape
        # qkv channels are [q | k | v], each split into contiguous per-head slices.
        qkv = self.qkv(as_dtype_of(x, self.qkv)).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        q = self.q_norm(as_dtype_of(q, self.q_norm))
        k = self.k_norm(as_dtype_of(k, self.k_norm))
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, execution: ExecutionMode | None = None) -> Tensor:
        """Fused SDPA (default scale, no mask) -> [B, heads, N, head_dim]; the mode picks the CUDA backends."""
        return scaled_dot_product(q, k, v, execution)

    def merge_heads(self, out: Tensor) -> Tensor:
        """[B, heads, N, head_dim] -> projected [B, N, C]."""
        batch, _, tokens, _ = out.shape
        return self.proj(as_dtype_of(out.transpose(1, 2).reshape(batch, tokens, -1), self.proj))

    def forward(self, x: Tensor, pos: Tensor | None = None, execution: ExecutionMode | None = None) -> Tensor:
        q, k, v = self.project_qkv(x, pos)
        return self.merge_heads(self.attend(q, k, v, execution))


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

    def forward(self, x: Tensor, pos: Tensor | None = None, execution: ExecutionMode | None = None) -> Tensor:
        """x [B, N, C]. Plain: returns a new tensor. Lean (inference only): updates x in place and returns it."""
        if is_lean(execution):
            return self._forward_lean(x, pos, execution)
        x = x + self.ls1(self.attn(self.norm1(as_dtype_of(x, self.norm1)), pos=pos, execution=execution))
        x = x + self.ls2(self.mlp(self.norm2(as_dtype_of(x, self.norm2))))
        return x

    def _forward_lean(self, x: Tensor, pos: Tensor | None, execution: ExecutionMode) -> Tensor:
        """The same block over chunks of tokens, residual updated in place; only attention sees whole sequences."""
        attn = self.attn
        rows, tokens, _ = x.shape
        shape = (rows, attn.num_heads, tokens, attn.head_dim)
        q, k, v = (torch.empty(shape, dtype=execution.dtype, device=x.device) for _ in range(3))
        pieces = list(token_slices(rows, tokens, execution.token_chunk))
        for r, t in pieces:
            h = self.norm1(as_dtype_of(x[r, t], self.norm1)).to(execution.dtype)
            qc, kc, vc = attn.project_qkv(h, None if pos is None else pos[r, t])
            del h
            q[r, :, t], k[r, :, t], v[r, :, t] = qc, kc, vc
            del qc, kc, vc
        out = attn.attend(q, k, v, execution)
        del q, k, v
        for r, t in pieces:
            xc = x[r, t]  # a view: the in-place adds below write into x
            xc.add_(self.ls1(attn.merge_heads(out[r, :, t])))
            h = self.norm2(as_dtype_of(xc, self.norm2)).to(execution.dtype)
            xc.add_(self.ls2(self.mlp(h)))
            del h
        del out
        return x

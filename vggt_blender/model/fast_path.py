"""Fast, memory-lean inference around a loaded VGGT (composition: the model's modules keep the weights).

What differs from `VGGT.forward` (same outputs, same math):
- The aggregator's weights and activations are held in `dtype` (bf16 by default); small parameters
  (LayerNorm, LayerScale, tokens, position table) keep an fp32 copy so they are not rounded twice.
  qk-norm and RoPE run in fp32 (as the official model does under autocast), then q/k/v are written
  straight into contiguous [B, heads, N, head_dim] buffers in `dtype` so fused SDPA kernels
  (cuDNN / flash / memory-efficient) are eligible.
- The residual stream (fp32 by default, like the official model under autocast; `residual_dtype=bf16`
  halves it but roughly triples the error) is one preallocated tensor updated in place; everything
  token-wise (norms, qkv, projection, MLP) runs in chunks of `token_chunk` tokens, so the 4x-wide MLP
  activations never exist for all tokens at once. Only attention itself sees the whole sequence.
- Only the layers the heads read are kept, written into preallocated [B, S, P, 2C] tensors in `dtype`.
- The camera, depth and point heads run in fp32, the dense heads per chunk of frames: each chunk of
  tokens is cast to fp32 inside the loop and its outputs go into preallocated result tensors.
- Images may stay on the CPU: they are copied to the device one chunk of frames at a time.

With dtype=float32 the runner reproduces `VGGT.forward` to float rounding (tests/test_fast_path.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aggregator import IMAGENET_MEAN, IMAGENET_STD
from .config import VGGTConfig
from .dinov2 import DinoV2Encoder
from .layers import Block
from .rope import patch_positions
from .vggt import VGGT

log = logging.getLogger(__name__)

DEFAULT_TOKEN_CHUNK = 65536  # tokens per chunk for the token-wise work (~0.5 GB of bf16 MLP activations)
DEFAULT_HEAD_FRAMES = 8  # frames per chunk in the dense heads (as the official model)
# On small GPUs smaller chunks: predicted peak for 100 frames of 336x518 drops from 6.6 to 5.4 GiB.
SMALL_GPU_BYTES = 12 * 2**30
SMALL_GPU_TOKEN_CHUNK = 16384
SMALL_GPU_HEAD_FRAMES = 2


def default_chunks(device: torch.device) -> tuple[int, int]:
    """(token_chunk, head_frames) for `device`: smaller on GPUs with at most 12 GiB."""
    if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory <= SMALL_GPU_BYTES:
        return SMALL_GPU_TOKEN_CHUNK, SMALL_GPU_HEAD_FRAMES
    return DEFAULT_TOKEN_CHUNK, DEFAULT_HEAD_FRAMES

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # cuDNN first: on Hopper it is the fastest fused kernel for head_dim 64; flash and efficient next.
    DEFAULT_SDPA_BACKENDS: tuple[Any, ...] = (
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    )
except ImportError:  # pragma: no cover - old torch: let PyTorch choose
    SDPBackend = None  # type: ignore[assignment]
    sdpa_kernel = None  # type: ignore[assignment]
    DEFAULT_SDPA_BACKENDS = ()


def parse_sdpa_backends(text: str) -> tuple[Any, ...]:
    """'cudnn,flash,efficient,math' -> SDPBackend tuple (priority order); 'auto' -> PyTorch's own choice."""
    if text.strip().lower() in ("", "auto", "default") or SDPBackend is None:
        return ()
    names = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
             "math": "MATH"}
    out = []
    for part in text.split(","):
        key = part.strip().lower()
        if key not in names:
            raise ValueError(f"unknown SDPA backend '{part}' (known: {', '.join(names)}, auto)")
        out.append(getattr(SDPBackend, names[key]))
    return tuple(out)


@dataclass
class _Norm:
    """A LayerNorm's parameters: fp32 copies plus the eps."""

    weight: Tensor | None
    bias: Tensor | None
    eps: float

    @classmethod
    def of(cls, module: nn.Module, device: torch.device) -> "_Norm | None":
        if not isinstance(module, nn.LayerNorm):
            return None
        return cls(_f32(module.weight, device), _f32(module.bias, device), module.eps)

    def __call__(self, x: Tensor) -> Tensor:
        """LayerNorm in fp32 (input cast up), result in fp32."""
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight, self.bias, self.eps)


@dataclass
class _BlockParams:
    """One transformer block: the module (its big matrices, in the compute dtype) + fp32 small params."""

    block: Block
    norm1: _Norm
    norm2: _Norm
    q_norm: _Norm | None
    k_norm: _Norm | None
    ls1: Tensor
    ls2: Tensor
    # The norms feeding the matmuls, in the compute dtype (one fused kernel when the residual is low precision).
    norm1_lp: tuple[Tensor | None, Tensor | None]
    norm2_lp: tuple[Tensor | None, Tensor | None]


def _f32(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.detach().to(device=device, dtype=torch.float32).clone()


def _lp(t: Tensor | None, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.detach().to(device=device, dtype=dtype)


def _block_params(block: Block, device: torch.device, dtype: torch.dtype) -> _BlockParams:
    return _BlockParams(
        block=block,
        norm1=_Norm.of(block.norm1, device),
        norm2=_Norm.of(block.norm2, device),
        q_norm=_Norm.of(block.attn.q_norm, device),
        k_norm=_Norm.of(block.attn.k_norm, device),
        ls1=_f32(block.ls1.gamma, device),
        ls2=_f32(block.ls2.gamma, device),
        norm1_lp=(_lp(block.norm1.weight, device, dtype), _lp(block.norm1.bias, device, dtype)),
        norm2_lp=(_lp(block.norm2.weight, device, dtype), _lp(block.norm2.bias, device, dtype)),
    )


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class FastRunner:
    """Runs a VGGT whose aggregator was cast by `prepare_fast`. Call it like the model (no track head).

    Build it with `prepare_fast` (it takes fp32 copies of the small parameters before the cast).
    """

    def __init__(
        self,
        model: VGGT,
        device: torch.device,
        dtype: torch.dtype,
        small_params: dict[str, Any],
        residual_dtype: torch.dtype | None = None,
        token_chunk: int | None = None,
        head_frames: int | None = None,
        sdpa_backends: Sequence[Any] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.residual_dtype = torch.float32 if residual_dtype is None else residual_dtype
        auto_tokens, auto_frames = default_chunks(device)
        self.token_chunk = max(1, int(token_chunk or auto_tokens))
        self.head_frames = max(1, int(head_frames or auto_frames))
        self.sdpa_backends = tuple(DEFAULT_SDPA_BACKENDS if sdpa_backends is None else sdpa_backends)
        self._small = small_params
        self._low_residual = self.residual_dtype != torch.float32
        agg = model.aggregator
        self._frame = [_block_params(b, device, dtype) for b in agg.frame_blocks]
        self._global = [_block_params(b, device, dtype) for b in agg.global_blocks]
        pe = agg.patch_embed
        self._dino = [_block_params(b, device, dtype) for b in pe.blocks] if isinstance(pe, DinoV2Encoder) else []
        self._dino_norm = _Norm.of(pe.norm, device) if isinstance(pe, DinoV2Encoder) else None
        # Called as on_step(done, total) after each aggregator step (progress; it may raise to cancel).
        self.on_step: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------------------------ public

    @torch.inference_mode()
    def __call__(self, images: Tensor, frames_chunk_size: int | None = None) -> dict[str, Tensor | list[Tensor]]:
        """images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1] (any device; moved per chunk).

        Returns the dict of `VGGT.forward` without tracks: pose_enc, pose_enc_list, depth, depth_conf,
        world_points, world_points_conf (fp32, on the runner's device) and the input images.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S,3,H,W] or [B,S,3,H,W], got shape {tuple(images.shape)}")
        tokens, patch_start_idx = self.aggregate(images, self.model.needed_layers(with_tracks=False))
        predictions = self.run_heads(tokens, images.shape, patch_start_idx, frames_chunk_size or self.head_frames)
        del tokens
        predictions["images"] = images
        return predictions

    @torch.inference_mode()
    def aggregate(self, images: Tensor, keep_layers: Sequence[int]) -> tuple[dict[int, Tensor], int]:
        """images [B, S, 3, H, W] -> ({layer: [B, S, P, 2C] in dtype}, patch_start_idx)."""
        agg = self.model.aggregator
        batch, frames, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(f"expected 3 input channels, got {channels}")
        ps = agg.patch_size
        if height % ps or width % ps:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {ps}")
        keep = sorted({int(i) for i in keep_layers})
        if any(not 0 <= i < agg.depth for i in keep):
            raise ValueError(f"layer indices {keep} are outside 0..{agg.depth - 1}")
        grid_h, grid_w = height // ps, width // ps
        start = agg.patch_start_idx
        num_tokens = start + grid_h * grid_w
        dim = self._small["camera_token"].shape[-1]
        n_frames = batch * frames

        # The residual stream: [B*S, P, C], the same memory as [B, S*P, C] for the global blocks.
        x = torch.empty(n_frames, num_tokens, dim, dtype=self.residual_dtype, device=self.device)
        x4 = x.view(batch, frames, num_tokens, dim)
        for name, lo, hi in (("camera_token", 0, 1), ("register_token", 1, start)):
            token = self._small[name]  # [1, 2, X, C]: slot 0 for frame 0, slot 1 for the others
            x4[:, :1, lo:hi] = token[:, :1]
            x4[:, 1:, lo:hi] = token[:, 1:]
        self._embed_patches(images, x, start, grid_h, grid_w)

        rope = self._rope_tables(grid_h, grid_w, start) if agg.rope is not None else None
        outputs = {i: torch.empty(batch, frames, num_tokens, 2 * dim, dtype=self.dtype, device=self.device)
                   for i in keep}
        steps = keep[-1] + 1 if keep else 0
        for i in range(steps):
            self._run_block(self._frame[i], x, n_frames, 1, num_tokens, rope)
            if i in outputs:
                outputs[i][..., :dim].copy_(x4)
            self._run_block(self._global[i], x.view(batch, frames * num_tokens, dim), batch, frames, num_tokens, rope)
            if i in outputs:
                outputs[i][..., dim:].copy_(x4)
            if self.on_step is not None:
                self.on_step(i + 1, steps)
        del x, x4
        return outputs, start

    @torch.inference_mode()
    def run_heads(self, tokens: dict[int, Tensor], image_shape: Sequence[int], patch_start_idx: int,
                  frames_chunk: int) -> dict[str, Tensor | list[Tensor]]:
        """Camera head on all frames; depth and point heads per chunk of frames, into preallocated outputs."""
        model = self.model
        batch, frames, _, height, width = image_shape
        preds: dict[str, Tensor | list[Tensor]] = {}
        if model.camera_head is not None:
            pose_enc_list = model.camera_head(tokens)
            preds["pose_enc"] = pose_enc_list[-1]
            preds["pose_enc_list"] = pose_enc_list
        dense = [(h, k) for h, k in ((model.depth_head, "depth"), (model.point_head, "world_points")) if h is not None]
        if not dense:
            return preds
        results: dict[str, Tensor] = {}
        for head, key in dense:
            channels = head.scratch.output_conv2[-1].out_channels - 1
            results[key] = torch.empty(batch, frames, height, width, channels, device=self.device)
            results[key + "_conf"] = torch.empty(batch, frames, height, width, device=self.device)
        for lo in range(0, frames, frames_chunk):
            hi = min(lo + frames_chunk, frames)
            # The DPT head reads only the shape of `images`: a zero-stride stand-in costs no memory.
            shape_only = torch.zeros((), device=self.device).expand(batch, hi - lo, 3, height, width)
            for head, key in dense:
                chunk = {i: tokens[i][:, lo:hi] for i in head.intermediate_layer_idx}
                values, conf = head(chunk, shape_only, patch_start_idx, None)
                results[key][:, lo:hi] = values
                results[key + "_conf"][:, lo:hi] = conf
                del values, conf, chunk
        preds.update(results)
        return preds

    # ------------------------------------------------------------------------------ aggregator

    def _embed_patches(self, images: Tensor, x: Tensor, start: int, grid_h: int, grid_w: int) -> None:
        """Per chunk of frames: normalize, patch-embed (DINOv2 or conv), write patch tokens into x[:, start:]."""
        batch, frames, _, height, width = images.shape
        flat = images.reshape(batch * frames, 3, height, width)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        pe = self.model.aggregator.patch_embed
        dino = isinstance(pe, DinoV2Encoder)
        seq = 1 + pe.num_register_tokens + grid_h * grid_w if dino else grid_h * grid_w
        per = max(1, self.token_chunk // seq)
        pos_table = self._dino_positions(grid_h, grid_w) if dino else None
        for lo in range(0, flat.shape[0], per):
            hi = min(lo + per, flat.shape[0])
            chunk = flat[lo:hi].to(device=self.device, dtype=torch.float32, non_blocking=True)
            chunk = ((chunk - mean) / std).to(self.dtype)
            conv = pe.patch_embed.proj if dino else pe.proj
            patches = conv(chunk).flatten(2).transpose(1, 2)  # [n, h*w, C]
            del chunk
            if dino:
                x[lo:hi, start:] = self._dino_forward(patches, pos_table)
            else:
                x[lo:hi, start:] = patches
            del patches

    def _dino_positions(self, grid_h: int, grid_w: int) -> Tensor:
        """The DINOv2 position table for this grid from the fp32 copy (as DinoV2Encoder.position_table)."""
        table = self._small["pos_embed"]
        pe = self.model.aggregator.patch_embed
        if grid_h == grid_w == pe.grid_size:
            return table
        cls_pos = table[:, :1]
        dim = table.shape[-1]
        grid = table[:, 1:].reshape(1, pe.grid_size, pe.grid_size, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)], dim=1)

    def _dino_forward(self, patches: Tensor, pos_table: Tensor) -> Tensor:
        """[n, h*w, C] embedded patches -> [n, h*w, C] normed DINOv2 patch tokens (residual dtype)."""
        pe = self.model.aggregator.patch_embed
        n, hw, dim = patches.shape
        regs = pe.num_register_tokens
        seq = 1 + regs + hw
        t = torch.empty(n, seq, dim, dtype=self.residual_dtype, device=self.device)
        t[:, 0] = self._small["cls_token"][:, 0] + pos_table[:, 0]
        if regs:
            t[:, 1:1 + regs] = self._small["register_tokens"]
        t[:, 1 + regs:] = patches.float() + pos_table[:, 1:]
        for params in self._dino:
            self._run_block(params, t, n, 1, seq, None)
        return self._dino_norm(t[:, 1 + regs:])

    def _rope_tables(self, grid_h: int, grid_w: int, start: int) -> tuple[Tensor, Tensor]:
        """fp32 cos/sin [P, 1, head_dim] for one frame's tokens (rows: first half by y, second by x)."""
        agg = self.model.aggregator
        head_dim = self._frame[0].block.attn.head_dim
        half = head_dim // 2
        pos = patch_positions(1, grid_h, grid_w, start, self.device)[0]  # [P, 2] (y, x)
        exponents = torch.arange(0, half, 2, device=self.device).float() / half
        inv_freq = 1.0 / (agg.rope.frequency ** exponents)  # [half/2]
        parts = []
        for axis in (0, 1):
            angles = pos[:, axis].float()[:, None] * inv_freq  # [P, half/2]
            parts.append(torch.cat([angles, angles], dim=-1))
        angles = torch.cat(parts, dim=-1)  # [P, head_dim]
        return angles.cos()[:, None, :], angles.sin()[:, None, :]

    def _chunks(self, nseq: int, frames: int, tokens_per_frame: int) -> Iterator[tuple[slice, slice]]:
        """(sequence slice, frame slice) pieces of about token_chunk tokens."""
        per = max(1, self.token_chunk // tokens_per_frame)
        if frames == 1:
            for lo in range(0, nseq, per):
                yield slice(lo, min(lo + per, nseq)), slice(0, 1)
        else:
            for n in range(nseq):
                for lo in range(0, frames, per):
                    yield slice(n, n + 1), slice(lo, min(lo + per, frames))

    def _norm_lp(self, x: Tensor, norm: _Norm, lp: tuple[Tensor | None, Tensor | None]) -> Tensor:
        """Pre-matmul LayerNorm, result in the compute dtype."""
        if self._low_residual and x.dtype == self.dtype:
            return F.layer_norm(x, (x.shape[-1],), lp[0], lp[1], norm.eps)  # one fused kernel
        return norm(x).to(self.dtype)

    def _qk(self, t: Tensor, norm: _Norm | None, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """qk-norm and 2-D RoPE in fp32 on [n, f, P, heads, head_dim]."""
        if norm is None and rope is None:
            return t
        t = norm(t) if norm is not None else t.float()
        if rope is not None:
            cos, sin = rope
            q4 = t.unflatten(-1, (2, 2, -1))  # [..., axis, half-part, freq]
            rotated = torch.stack([-q4[..., 1, :], q4[..., 0, :]], dim=-2).flatten(-3)
            t = t * cos + rotated * sin
        return t

    def _run_block(self, p: _BlockParams, x: Tensor, nseq: int, frames: int, tokens_per_frame: int,
                   rope: tuple[Tensor, Tensor] | None) -> None:
        """One pre-norm block, in place on x [nseq, frames*P, C]; attention spans each sequence."""
        block = p.block
        attn = block.attn
        heads, head_dim = attn.num_heads, attn.head_dim
        dim = x.shape[-1]
        x4 = x.view(nseq, frames, tokens_per_frame, dim)
        shape = (nseq, heads, frames, tokens_per_frame, head_dim)
        q = torch.empty(shape, dtype=self.dtype, device=self.device)
        k = torch.empty(shape, dtype=self.dtype, device=self.device)
        v = torch.empty(shape, dtype=self.dtype, device=self.device)
        for ns, fs in self._chunks(nseq, frames, tokens_per_frame):
            h = self._norm_lp(x4[ns, fs], p.norm1, p.norm1_lp)
            qkv = attn.qkv(h).unflatten(-1, (3, heads, head_dim))  # [n, f, P, 3, heads, hd]
            del h
            qc, kc, vc = qkv.unbind(-3)
            q[ns, :, fs] = self._qk(qc, p.q_norm, rope).permute(0, 3, 1, 2, 4)
            k[ns, :, fs] = self._qk(kc, p.k_norm, rope).permute(0, 3, 1, 2, 4)
            v[ns, :, fs] = vc.permute(0, 3, 1, 2, 4)
            del qkv, qc, kc, vc
        seq_len = frames * tokens_per_frame
        out = self._attention(q.view(nseq, heads, seq_len, head_dim), k.view(nseq, heads, seq_len, head_dim),
                              v.view(nseq, heads, seq_len, head_dim))
        del q, k, v
        out5 = out.unflatten(2, (frames, tokens_per_frame))  # [nseq, heads, f, P, hd]
        for ns, fs in self._chunks(nseq, frames, tokens_per_frame):
            xc = x4[ns, fs]
            a = out5[ns, :, fs].permute(0, 2, 3, 1, 4).flatten(-2)  # [n, f, P, C]
            xc.addcmul_(attn.proj(a), p.ls1)
            del a
            h = self._norm_lp(xc, p.norm2, p.norm2_lp)
            h = block.mlp.fc2(block.mlp.act(block.mlp.fc1(h)))
            xc.addcmul_(h, p.ls2)
            del h
        del out, out5

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if sdpa_kernel is None or not self.sdpa_backends or self.device.type != "cuda":
            return F.scaled_dot_product_attention(q, k, v)
        try:
            with _sdpa_context(self.sdpa_backends):
                return F.scaled_dot_product_attention(q, k, v)
        except RuntimeError as exc:
            # A fused kernel that rejects a shape (not an OOM): drop cuDNN once, keep going with the rest.
            if _is_oom(exc) or SDPBackend.CUDNN_ATTENTION not in self.sdpa_backends:
                raise
            log.warning("cuDNN attention failed (%s); using the other SDPA backends", str(exc).splitlines()[0])
            self.sdpa_backends = tuple(b for b in self.sdpa_backends if b != SDPBackend.CUDNN_ATTENTION)
            with _sdpa_context(self.sdpa_backends):
                return F.scaled_dot_product_attention(q, k, v)


def _sdpa_context(backends: Sequence[Any]) -> contextlib.AbstractContextManager:
    try:
        return sdpa_kernel(list(backends), set_priority=True)
    except TypeError:  # torch without set_priority: the order is PyTorch's
        return sdpa_kernel(list(backends))


# --------------------------------------------------------------------------------------- setup


def _small_aggregator_params(model: VGGT, device: torch.device) -> dict[str, Tensor]:
    """fp32 copies of the aggregator's token and position parameters, taken before any cast."""
    agg = model.aggregator
    small = {"camera_token": _f32(agg.camera_token, device), "register_token": _f32(agg.register_token, device)}
    pe = agg.patch_embed
    if isinstance(pe, DinoV2Encoder):
        small["cls_token"] = _f32(pe.cls_token, device)
        small["pos_embed"] = _f32(pe.pos_embed, device)
        if pe.register_tokens is not None:
            small["register_tokens"] = _f32(pe.register_tokens, device)
    return small


def prepare_fast(
    model: VGGT,
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    residual_dtype: torch.dtype | None = None,
    token_chunk: int | None = None,
    head_frames: int | None = None,
    sdpa_backends: Sequence[Any] | None = None,
) -> FastRunner:
    """Move `model` to `device`, cast its aggregator to `dtype` (heads stay fp32) and wrap it.

    The model is changed in place (its aggregator is now `dtype`): call the returned runner, not the
    model, afterwards. The track head, unused here, is left where it is. `residual_dtype` (default
    float32, as the official model under autocast) can be `dtype` to halve the residual stream's memory
    (1.8 GB at 1,000 frames of 336x518) at about 3x the output error. `token_chunk` (tokens per chunk of
    token-wise work) and `head_frames` (frames per dense-head chunk) default by device (`default_chunks`).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    model.eval()
    model.requires_grad_(False)
    # The runner copies the small parameters in fp32 first; only then is the aggregator cast.
    runner = FastRunner(model, device, dtype, _small_aggregator_params(model, device), residual_dtype=residual_dtype,
                        token_chunk=token_chunk, head_frames=head_frames, sdpa_backends=sdpa_backends)
    model.aggregator.to(device=device, dtype=dtype)
    for head in (model.camera_head, model.depth_head, model.point_head):
        if head is not None:
            head.to(device=device, dtype=torch.float32)
    return runner


def load_fast(
    config: Any,
    path: str | os.PathLike[str],
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    **runner_options: Any,
) -> FastRunner:
    """Read a checkpoint (checked against the model) and build the runner with `fast_from_state_dict`."""
    from ..weights.loading import check_state_dict, read_state_dict

    cfg = _config(config)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VGGT(cfg, enable_track=False).state_dict().items()}
    sd = {k: v for k, v in read_state_dict(path, map_location="cpu").items() if not k.startswith("track_head.")}
    check_state_dict(sd, expected, file=str(path))
    return fast_from_state_dict(cfg, sd, device, dtype, **runner_options)


def fast_from_state_dict(
    config: Any,
    state_dict: dict[str, Tensor],
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    **runner_options: Any,
) -> FastRunner:
    """Put a state dict on `device` tensor by tensor: aggregator matrices straight in `dtype`, everything
    else fp32 (no fp32 copy of the aggregator ever sits on the device); the track head is not built.
    `state_dict` is emptied as it goes (pass a copy to keep it).
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = VGGT(_config(config), enable_track=False)
    placed = {}
    for key in list(state_dict):
        if key.startswith("track_head."):
            continue
        tensor = state_dict.pop(key)
        low = key.startswith("aggregator.") and tensor.dim() >= 2 and not _is_small_key(key)
        placed[key] = tensor.to(device=device, dtype=dtype if low else torch.float32)
        del tensor
    model.load_state_dict(placed, strict=True, assign=True)
    del placed
    return prepare_fast(model, device, dtype, **runner_options)


def _config(config: Any) -> VGGTConfig:
    """A VGGTConfig, a preset name ("vggt-1b"), a config.json path or a dict in the §12 schema."""
    if isinstance(config, VGGTConfig):
        return config
    if isinstance(config, Mapping):
        return VGGTConfig.from_dict(dict(config))
    return VGGTConfig.resolve(os.fspath(config))


def _is_small_key(key: str) -> bool:
    """Aggregator parameters kept in fp32 until prepare_fast has copied them (tokens, position table)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("camera_token", "register_token", "cls_token", "pos_embed", "register_tokens", "mask_token")


__all__ = ["FastRunner", "prepare_fast", "load_fast", "fast_from_state_dict", "parse_sdpa_backends",
           "default_chunks", "DEFAULT_SDPA_BACKENDS", "DEFAULT_TOKEN_CHUNK", "DEFAULT_HEAD_FRAMES"]

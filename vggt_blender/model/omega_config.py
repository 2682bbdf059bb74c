"""VGGT-Omega architecture configuration in the fixtures' JSON schema (VGGT_OMEGA_SPEC §13).

Plain dataclasses, no torch, like `config.py` for v1 (whose value checks are reused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import ModelConfigError, VGGTConfig, _checked_value, _nested_from_dict

OMEGA_PATCH_EMBED_TYPES = ("dinov3",)
ROPE_COORDS = ("max",)  # the only normalisation the released checkpoints use


@dataclass
class OmegaPatchEmbedConfig:
    """The per-frame DINOv3-style ViT (no position table, RoPE in every block, storage tokens)."""

    type: str = "dinov3"
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_storage_tokens: int = 4
    rope_base: float = 100.0
    rope_normalize_coords: str = "max"


@dataclass
class OmegaCameraHeadConfig:
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0


@dataclass
class OmegaDenseHeadConfig:
    features: int = 256
    out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    intermediate_layer_idx: list[int] = field(default_factory=lambda: [4, 11, 17, 23])
    frames_chunk_size: int = 8


@dataclass
class OmegaTextHeadConfig:
    depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0


_NESTED = {
    "patch_embed": OmegaPatchEmbedConfig,
    "camera_head": OmegaCameraHeadConfig,
    "dense_head": OmegaDenseHeadConfig,
    "text_alignment_head": OmegaTextHeadConfig,
}


@dataclass
class VGGTOmegaConfig:
    """The whole model. Defaults are VGGT-Omega-1B-512 (`text_alignment_head` None: no text head)."""

    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 16
    register_attention_block_indices: list[int] = field(default_factory=lambda: [2, 6, 9, 14, 20])
    cached_layer_indices: list[int] = field(default_factory=lambda: [4, 11, 17, 23])
    rope_base: float = 100.0
    rope_normalize_coords: str = "max"
    patch_embed: OmegaPatchEmbedConfig = field(default_factory=OmegaPatchEmbedConfig)
    camera_head: OmegaCameraHeadConfig | None = field(default_factory=OmegaCameraHeadConfig)
    dense_head: OmegaDenseHeadConfig | None = field(default_factory=OmegaDenseHeadConfig)
    text_alignment_head: OmegaTextHeadConfig | None = None

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def omega_1b_512(cls) -> "VGGTOmegaConfig":
        """VGGT-Omega-1B-512 (`vggt_omega_1b_512.pt`), = the official `VGGTOmega()`."""
        return cls()

    @classmethod
    def omega_1b_256_text(cls) -> "VGGTOmegaConfig":
        """VGGT-Omega-1B-256-Text-Alignment (`vggt_omega_1b_256_text.pt`): the same plus the text readout."""
        return cls(text_alignment_head=OmegaTextHeadConfig())

    @classmethod
    def preset(cls, name: str) -> "VGGTOmegaConfig":
        presets = {"vggt-omega-1b-512": cls.omega_1b_512, "vggt-omega-1b-256-text": cls.omega_1b_256_text}
        key = name.strip().lower()
        if key not in presets:
            raise ModelConfigError(f"unknown VGGT-Omega preset '{name}' (known: {', '.join(sorted(presets))})")
        return presets[key]()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> "VGGTOmegaConfig":
        """Build from the §13 schema. Missing keys keep the 1B-512 default; unknown keys are rejected;
        a head section given as null means that head is absent."""
        where = f"model config {source}" if source else "model config"
        if not isinstance(data, Mapping):
            raise ModelConfigError(f"{where}: expected a JSON object, got {type(data).__name__}", source)
        top_fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in top_fields:
                raise ModelConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(top_fields)})", source)
            if key in _NESTED:
                if value is None and key != "patch_embed":
                    kwargs[key] = None
                else:
                    kwargs[key] = _nested_from_dict(_NESTED[key], value, f"{where}, section '{key}'", source)
            else:
                kwargs[key] = _checked_value(top_fields[key], value, f"{where}: '{key}'", source)
        config = cls(**kwargs)
        config.validate(source)
        return config

    # The JSON file and preset-or-file handling are v1's, unchanged (they call this class's from_dict/preset).
    load = classmethod(VGGTConfig.load.__func__)
    resolve = classmethod(VGGTConfig.resolve.__func__)
    to_dict = VGGTConfig.to_dict
    save = VGGTConfig.save

    # ---- derived sizes ------------------------------------------------------------------------

    @property
    def num_special_tokens(self) -> int:
        """Camera + registers per frame: where the patch tokens start."""
        return 1 + self.num_register_tokens

    @property
    def head_layers(self) -> list[int]:
        """Aggregator layers some head reads: the last (camera, text, returned tokens) and the dense taps."""
        layers = {self.depth - 1}
        if self.dense_head is not None:
            layers.update(self.dense_head.intermediate_layer_idx)
        return sorted(layers)

    # ---- checks -------------------------------------------------------------------------------

    def validate(self, source: str | None = None) -> None:
        """Reject combinations the architecture cannot build or run (one message listing every problem)."""
        where = f"model config {source}" if source else "model config"
        problems: list[str] = []
        dim = self.embed_dim
        for name, value in (("patch_size", self.patch_size), ("embed_dim", dim), ("depth", self.depth),
                            ("num_heads", self.num_heads)):
            if value < 1:
                problems.append(f"{name} must be positive, got {value}")
        if self.num_register_tokens < 0:
            problems.append("num_register_tokens must not be negative")
        if self.num_heads > 0 and dim % (4 * self.num_heads):
            problems.append(f"embed_dim {dim} must be divisible by 4*num_heads ({4 * self.num_heads}) for RoPE")
        pe = self.patch_embed
        if pe.type not in OMEGA_PATCH_EMBED_TYPES:
            problems.append(f"patch_embed.type '{pe.type}' is not one of {', '.join(OMEGA_PATCH_EMBED_TYPES)}")
        if pe.num_heads < 1 or dim % (4 * pe.num_heads):
            problems.append(f"embed_dim {dim} must be divisible by 4*patch_embed.num_heads")
        if pe.num_storage_tokens < 0:
            problems.append("patch_embed.num_storage_tokens must not be negative")
        for name, coords in (("rope_normalize_coords", self.rope_normalize_coords),
                             ("patch_embed.rope_normalize_coords", pe.rope_normalize_coords)):
            if coords not in ROPE_COORDS:
                problems.append(f"{name} '{coords}' is not supported (only {', '.join(ROPE_COORDS)})")
        for idx in self.register_attention_block_indices:
            if not 0 <= idx < self.depth:
                problems.append(f"register_attention_block_indices {idx} is outside 0..{self.depth - 1}")
        cached = set(self.cached_layer_indices)
        for idx in sorted(cached):
            if not 0 <= idx < self.depth:
                problems.append(f"cached_layer_indices {idx} is outside 0..{self.depth - 1}")
        if self.depth - 1 not in cached:
            problems.append(f"cached_layer_indices must contain the last layer {self.depth - 1}")
        two = 2 * dim
        if self.camera_head is not None and (self.camera_head.num_heads < 1 or two % self.camera_head.num_heads):
            problems.append("2*embed_dim is not divisible by camera_head.num_heads")
        if self.text_alignment_head is not None and (
            self.text_alignment_head.num_heads < 1 or two % self.text_alignment_head.num_heads
        ):
            problems.append("2*embed_dim is not divisible by text_alignment_head.num_heads")
        dense = self.dense_head
        if dense is not None:
            if self.patch_size % 4:
                problems.append(f"patch_size {self.patch_size} must be divisible by 4 (the depth pixel shuffle)")
            if len(dense.out_channels) != 4 or len(dense.intermediate_layer_idx) != 4:
                problems.append("dense_head.out_channels and intermediate_layer_idx must list 4 entries each")
            for idx in dense.intermediate_layer_idx:
                if idx not in cached:
                    problems.append(f"dense_head.intermediate_layer_idx {idx} is not a cached layer")
            # The UV position embedding splits channels in four (sin/cos of u and v).
            if any(c % 4 for c in dense.out_channels) or dense.features % 4:
                problems.append("dense_head channel counts (out_channels, features) must be divisible by 4")
            if dense.frames_chunk_size < 1:
                problems.append("dense_head.frames_chunk_size must be positive")
        if problems:
            raise ModelConfigError(f"{where}: " + "; ".join(problems), source)

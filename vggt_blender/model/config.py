"""VGGT architecture configuration in the neutral JSON schema (VGGT_SPEC §12).

Plain dataclasses, no torch: the worker and the CLI can read and validate a config without the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import RequestError

PATCH_EMBED_TYPES = ("dinov2_reg", "conv")


class ModelConfigError(RequestError, ValueError):
    """A model configuration (a dict or a JSON file) that does not describe a buildable VGGT."""


@dataclass
class PatchEmbedConfig:
    """The per-frame patch embedding: a DINOv2 ViT with registers, or a single patchify conv."""

    type: str = "dinov2_reg"
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4


@dataclass
class CameraHeadConfig:
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    iterations: int = 4


@dataclass
class DPTHeadConfig:
    """Shared by the depth head and the point head."""

    features: int = 256
    out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    intermediate_layer_idx: list[int] = field(default_factory=lambda: [4, 11, 17, 23])


@dataclass
class TrackHeadConfig:
    features: int = 128
    out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    hidden_size: int = 384
    corr_levels: int = 7
    corr_radius: int = 4
    iters: int = 4
    stride: int = 2


_NESTED = {
    "patch_embed": PatchEmbedConfig,
    "camera_head": CameraHeadConfig,
    "dpt_head": DPTHeadConfig,
    "track_head": TrackHeadConfig,
}


@dataclass
class VGGTConfig:
    """The whole model. Defaults are VGGT-1B."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    qk_norm: bool = True
    patch_embed: PatchEmbedConfig = field(default_factory=PatchEmbedConfig)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    dpt_head: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    track_head: TrackHeadConfig = field(default_factory=TrackHeadConfig)

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def vggt_1b(cls) -> "VGGTConfig":
        return cls()

    @classmethod
    def preset(cls, name: str) -> "VGGTConfig":
        presets = {"vggt-1b": cls.vggt_1b}
        key = name.strip().lower()
        if key not in presets:
            raise ModelConfigError(f"unknown model preset '{name}' (known: {', '.join(sorted(presets))})")
        return presets[key]()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> "VGGTConfig":
        """Build from the §12 schema. Missing keys keep the VGGT-1B default; unknown keys are rejected."""
        where = f"model config {source}" if source else "model config"
        if not isinstance(data, Mapping):
            raise ModelConfigError(f"{where}: expected a JSON object, got {type(data).__name__}", source)
        kwargs: dict[str, Any] = {}
        top_fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in top_fields:
                raise ModelConfigError(
                    f"{where}: unknown key '{key}' (allowed: {', '.join(top_fields)})", source
                )
            if key in _NESTED:
                kwargs[key] = _nested_from_dict(_NESTED[key], value, f"{where}, section '{key}'", source)
            else:
                kwargs[key] = _checked_value(top_fields[key], value, f"{where}: '{key}'", source)
        config = cls(**kwargs)
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: str | Path) -> "VGGTConfig":
        """Read a JSON file in the §12 schema."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelConfigError(f"cannot read model config {path}: {exc.strerror or exc}", str(path)) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelConfigError(
                f"model config {path} is not valid JSON (line {exc.lineno}: {exc.msg})", str(path)
            ) from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def resolve(cls, name_or_path: str | Path) -> "VGGTConfig":
        """A preset name ("vggt-1b") or a path to a JSON file, as in the worker request."""
        text = str(name_or_path)
        if not text.lower().endswith(".json") and not Path(text).exists():
            return cls.preset(text)
        return cls.load(text)

    # ---- output -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    # ---- checks -------------------------------------------------------------------------------

    def validate(self, source: str | None = None) -> None:
        """Reject combinations the architecture cannot build or run."""
        where = f"model config {source}" if source else "model config"
        problems: list[str] = []
        # Sizes first: a zero or negative one would make the checks below divide by zero.
        sizes = {"img_size": self.img_size, "patch_size": self.patch_size, "embed_dim": self.embed_dim,
                 "depth": self.depth, "num_heads": self.num_heads, "patch_embed.num_heads": self.patch_embed.num_heads,
                 "camera_head.num_heads": self.camera_head.num_heads}
        bad = [f"{name} {value!r}" for name, value in sizes.items()
               if isinstance(value, bool) or not isinstance(value, int) or value <= 0]
        if bad:
            raise ModelConfigError(f"{where}: sizes must be positive whole numbers: {', '.join(bad)}")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        elif self.rope_freq > 0 and (self.embed_dim // self.num_heads) % 4:
            problems.append("2-D RoPE needs a head dimension (embed_dim / num_heads) divisible by 4")
        pe = self.patch_embed
        if pe.type not in PATCH_EMBED_TYPES:
            problems.append(f"patch_embed.type '{pe.type}' is not one of {', '.join(PATCH_EMBED_TYPES)}")
        if pe.embed_dim != self.embed_dim:
            problems.append(f"patch_embed.embed_dim {pe.embed_dim} must equal embed_dim {self.embed_dim}")
        if pe.type == "dinov2_reg" and pe.embed_dim % pe.num_heads:
            problems.append("patch_embed.embed_dim is not divisible by patch_embed.num_heads")
        if (2 * self.embed_dim) % self.camera_head.num_heads:
            problems.append("2*embed_dim is not divisible by camera_head.num_heads")
        for name, head in (("dpt_head", self.dpt_head), ("track_head", self.track_head)):
            if len(head.out_channels) != 4:
                problems.append(f"{name}.out_channels must list 4 channel counts")
        if len(self.dpt_head.intermediate_layer_idx) != 4:
            problems.append("dpt_head.intermediate_layer_idx must list 4 layer indices")
        for idx in self.dpt_head.intermediate_layer_idx:
            if not 0 <= idx < self.depth:
                problems.append(f"dpt_head.intermediate_layer_idx {idx} is outside 0..{self.depth - 1}")
        # The UV position embedding splits channels in four (sin/cos of u and v).
        if any(c % 4 for c in self.dpt_head.out_channels) or (self.dpt_head.features // 2) % 4:
            problems.append("dpt_head channel counts (out_channels, features/2) must be divisible by 4")
        if problems:
            raise ModelConfigError(f"{where}: " + "; ".join(problems), source)

    @property
    def head_layers(self) -> list[int]:
        """Absolute aggregator layer indices some head reads (camera: the last; DPT: the taps)."""
        return sorted({self.depth - 1, *self.dpt_head.intermediate_layer_idx})


def _nested_from_dict(cls: type, value: Any, where: str, source: str | None) -> Any:
    if not isinstance(value, Mapping):
        raise ModelConfigError(f"{where}: expected an object, got {type(value).__name__}", source)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            raise ModelConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(fields)})", source)
        kwargs[key] = _checked_value(fields[key], item, f"{where}: '{key}'", source)
    return cls(**kwargs)


def _checked_value(f: dataclasses.Field, value: Any, where: str, source: str | None) -> Any:
    """Check one JSON value against the field's annotation (annotations are strings here)."""
    kind = str(f.type)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelConfigError(f"{where} must be an integer, got {value!r}", source)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelConfigError(f"{where} must be a number, got {value!r}", source)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ModelConfigError(f"{where} must be true or false, got {value!r}", source)
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ModelConfigError(f"{where} must be a string, got {value!r}", source)
        return value
    if kind == "list[int]":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ModelConfigError(f"{where} must be a list of integers, got {value!r}", source)
        return list(value)
    return value

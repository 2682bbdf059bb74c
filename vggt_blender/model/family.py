"""Which model family a state dict belongs to, from its key names alone (no torch needed).

VGGT-Omega's keys are unmistakable: `aggregator.inter_frame_blocks.*` (v1: `global_blocks`), the
`dense_head.*` and the DINOv3 `storage_tokens`; VGGT v1 has `aggregator.global_blocks.*`, `depth_head.*`,
`point_head.*`. Anything else is neither (a checkpoint of another model, or not a checkpoint at all).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

FAMILIES = ("vggt", "vggt-omega")

_OMEGA_MARKERS = ("aggregator.inter_frame_blocks.", "aggregator.patch_embed.storage_tokens", "dense_head.")
_V1_MARKERS = ("aggregator.global_blocks.", "depth_head.", "point_head.", "track_head.")


def detect_family(keys: Iterable[str]) -> str | None:
    """'vggt-omega', 'vggt', or None when the keys match neither (or both) families."""
    omega = v1 = False
    for key in keys:
        if not isinstance(key, str):
            continue
        if key.startswith("module."):  # DDP-wrapped training checkpoints
            key = key[len("module."):]
        omega = omega or key.startswith(_OMEGA_MARKERS)
        v1 = v1 or key.startswith(_V1_MARKERS)
    if omega == v1:
        return None
    return "vggt-omega" if omega else "vggt"


def has_text_alignment_head(keys: Iterable[str]) -> bool:
    """True for the text-aligned Omega checkpoint (`vggt_omega_1b_256_text.pt`)."""
    return any(isinstance(k, str) and k.startswith("text_alignment_head.") for k in keys)


def family_of_config(config: Any) -> str:
    """'vggt-omega' for a VGGTOmegaConfig, 'vggt' for a VGGTConfig."""
    from .omega_config import VGGTOmegaConfig

    return "vggt-omega" if isinstance(config, VGGTOmegaConfig) else "vggt"


def _looks_like_omega_dict(data: Mapping[str, Any]) -> bool:
    pe = data.get("patch_embed")
    return any(k in data for k in _OMEGA_CONFIG_KEYS) or (isinstance(pe, Mapping) and pe.get("type") == "dinov3")


_OMEGA_CONFIG_KEYS = ("register_attention_block_indices", "cached_layer_indices", "dense_head",
                      "text_alignment_head", "num_storage_tokens")


def resolve_config(config: Any) -> Any:
    """A VGGTConfig or VGGTOmegaConfig from a config object, a preset name of either family
    ("vggt-1b", "vggt-omega-1b-512", ...), a config.json path or a dict (the schema says which family)."""
    import json
    from pathlib import Path

    from .config import VGGTConfig
    from .omega_config import VGGTOmegaConfig

    if isinstance(config, (VGGTConfig, VGGTOmegaConfig)):
        return config
    if isinstance(config, Mapping):
        cls = VGGTOmegaConfig if _looks_like_omega_dict(config) else VGGTConfig
        return cls.from_dict(dict(config))
    if isinstance(config, (str, os.PathLike)):
        text = os.fspath(config)
        if text.lower().endswith(".json") or Path(text).exists():
            try:
                data = json.loads(Path(text).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return VGGTConfig.load(text)  # its own clear error message
            cls = VGGTOmegaConfig if isinstance(data, Mapping) and _looks_like_omega_dict(data) else VGGTConfig
            return cls.load(text)
        if text.strip().lower().startswith("vggt-omega"):
            return VGGTOmegaConfig.preset(text)
        return VGGTConfig.preset(text)
    raise TypeError(f"config must be a VGGTConfig, a VGGTOmegaConfig, a preset name, a JSON path or a dict, "
                    f"not {type(config).__name__}")


def default_config(family: str, keys: Iterable[str] = ()) -> Any:
    """The published model of `family` a checkpoint with these keys is: VGGT-1B, VGGT-Omega-1B-512, or the
    256-px text-aligned Omega when the keys carry the text head."""
    from .config import VGGTConfig
    from .omega_config import VGGTOmegaConfig

    if family == "vggt-omega":
        return VGGTOmegaConfig.omega_1b_256_text() if has_text_alignment_head(keys) else VGGTOmegaConfig()
    return VGGTConfig.vggt_1b()


V1_HEAD_FLAGS = ("enable_camera", "enable_depth", "enable_point", "enable_track")


def build_model(config: Any, **v1_flags: Any) -> Any:
    """VGGT or VGGTOmega for a config of either family (on the current default device).

    `v1_flags` (enable_track=False, ...) go to VGGT; VGGT-Omega has no point or track head and takes its
    heads from the config, so they are ignored there.
    """
    from .omega import VGGTOmega
    from .vggt import VGGT

    unknown = sorted(set(v1_flags) - set(V1_HEAD_FLAGS))
    if unknown:
        raise TypeError(f"unknown model flags: {', '.join(unknown)}")
    config = resolve_config(config)
    return VGGTOmega(config) if family_of_config(config) == "vggt-omega" else VGGT(config, **v1_flags)


def family_mismatch(keys: Iterable[str], config: Any) -> str | None:
    """A one-line explanation when a state dict's keys belong to the other family than `config`, else None."""
    found = detect_family(keys)
    wanted = family_of_config(config)
    if found is None or found == wanted:
        return None
    return (f"this is a {FAMILY_NAMES[found]} checkpoint, but the {FAMILY_NAMES[wanted]} model was requested; "
            f"choose a {FAMILY_NAMES[found]} model (or leave the model unset to follow the checkpoint)")


FAMILY_NAMES = {"vggt": "VGGT", "vggt-omega": "VGGT-Omega"}

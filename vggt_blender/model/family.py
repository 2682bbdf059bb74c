"""Which model family a state dict belongs to, from its key names alone (no torch needed).

VGGT-Omega's keys are unmistakable: `aggregator.inter_frame_blocks.*` (v1: `global_blocks`), the
`dense_head.*` and the DINOv3 `storage_tokens`; VGGT v1 has `aggregator.global_blocks.*`, `depth_head.*`,
`point_head.*`. Anything else is neither (a checkpoint of another model, or not a checkpoint at all).
"""

from __future__ import annotations

from typing import Iterable

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

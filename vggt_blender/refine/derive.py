"""The refinement's one door to the project's derivations from depth and cameras (so a move of that code
changes one import here)."""

from __future__ import annotations

from ..geometry.cameras import depth_to_world_points, intrinsics_to_photo, pixel_map_matrix

__all__ = ["depth_to_world_points", "intrinsics_to_photo", "pixel_map_matrix"]

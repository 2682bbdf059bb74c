"""Camera refinement by bundle adjustment (numpy + pycolmap; never torch, never imported by Blender)."""

from .pipeline import RefineReport, refine_reconstruction

__all__ = ["RefineReport", "refine_reconstruction"]

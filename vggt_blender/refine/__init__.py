"""Camera refinement by bundle adjustment (numpy + pycolmap; never torch, never imported by Blender)."""

from ..errors import RefinementError

try:
    import pycolmap  # noqa: F401
except ImportError as exc:  # the runtime installer adds it; an older runtime may lack it
    raise RefinementError("camera refinement needs pycolmap in the inference runtime "
                          "(pip install pycolmap==4.2.1, or reinstall the runtime from the add-on)") from exc

from .pipeline import RefineReport, refine_reconstruction  # noqa: E402

__all__ = ["RefineReport", "refine_reconstruction"]

"""What the scene builders create, as plain data shared by the panel, the CLI (`--blend`) and the builders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

_T = TypeVar("_T", bound="_PlainOptions")


class _PlainOptions:
    """to_dict / from_dict for the option dataclasses (the worker request and preferences carry plain dicts)."""

    _what = "option"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls._what}(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class SceneOptions(_PlainOptions):
    _what = "scene option"

    create_cameras: bool = True
    create_point_cloud: bool = True
    create_depth_planes: bool = True
    # "per_photo": one camera per photo; "animated": one camera keyed per frame (a shot); "both".
    camera_mode: str = "per_photo"
    # "depth": world points from depth + camera (default, more accurate); "point_map": the point head's map.
    point_source: str = "depth"
    # Initial value of the live "Min Confidence" input (raw confidence, >= 1).
    min_confidence: float = 1.5
    # Points are randomly subsampled (fixed seed) to at most this many before they reach Blender.
    max_points: int = 2_000_000
    # Depth planes: one vertex every `plane_step` model pixels.
    plane_step: int = 4
    # Scene units per reconstruction unit (VGGT's scale is normalised, not metric).
    scale: float = 1.0
    point_radius: float = 0.005
    # Show each photo as its camera's background image.
    background_images: bool = True



# A camera whose mean solve (reprojection) error exceeds this many photo pixels is flagged in the panel.
SOLVE_ERROR_WARN_PX = 1.0

# Camera refinement (bundle adjustment): `python -m vggt_blender refine`, the worker's "refine" request, the panel.
REFINE_CAMERA_MODELS = ("pinhole", "simple_radial", "opencv")


@dataclass
class RefineOptions(_PlainOptions):
    _what = "refine option"
    # pinhole: no distortion; simple_radial: one radial coefficient k; opencv: k1, k2, p1, p2 (and fx, fy apart).
    camera_model: str = "pinhole"
    # One intrinsic set for all views (one physical camera: a video, a single-camera photo set).
    shared_intrinsics: bool = False
    refine_principal_point: bool = False
    # Solve fx and fy apart (near-degenerate for cameras pitched down at a floor: off by default).
    separate_focal: bool = False
    # Features per photo, and the longest photo side features are found at (larger photos are scaled down).
    max_features: int = 4096
    max_image_size: int = 3200
    # Each photo is matched with at most this many others, the ones its predicted view overlaps most.
    max_pairs_per_image: int = 10
    # Rounds of re-triangulation + bundle adjustment, with tightening outlier thresholds.
    rounds: int = 4
    # A view needs this many inlier observations to take a refined camera.
    min_observations: int = 20

    def __post_init__(self) -> None:
        if self.camera_model not in REFINE_CAMERA_MODELS:
            raise ValueError(f"camera model must be one of {', '.join(REFINE_CAMERA_MODELS)}, "
                             f"got '{self.camera_model}'")


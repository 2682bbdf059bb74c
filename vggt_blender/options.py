"""What the scene builders create, as plain data shared by the panel, the CLI (`--blend`) and the builders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Inference choices shared by the command line, the worker request and the preferences.
DEVICES = ("auto", "cuda", "mps", "cpu")  # "cuda:N" is accepted too
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PREPROCESS_MODES = ("crop", "pad")
FAST_PATH_CHOICES = ("auto", "on", "off")
DEFAULT_CONFIG = "vggt-1b"


@dataclass
class SceneOptions:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SceneOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown scene option(s): {', '.join(sorted(unknown))}")
        return cls(**data)

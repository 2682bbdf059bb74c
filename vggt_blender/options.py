"""What the scene builders create, as plain data shared by the panel, the CLI (`--blend`) and the builders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


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


# --- Shots (a video file or an image sequence): frame choice and long-shot chunking -------------------------

SHOT_OVERLAP_DEFAULT = 20  # views shared by consecutive chunks of a long shot
SEQUENCE_FPS_DEFAULT = 24.0  # an image sequence does not say its rate


@dataclass
class ShotOptions:
    """The shot fields of a CLI run or a worker request (all optional; None = the default).

    every/start/end/max_frames: which source frames (0-based, `end` inclusive, see shot/selection.py);
    chunk_size: views per forward pass (None = from free memory); overlap: views shared between chunks;
    fps: an image sequence's rate; sequence: take a folder as one image sequence, not as photos.
    """

    every: int | None = None
    start: int | None = None
    end: int | None = None
    max_frames: int | None = None
    chunk_size: int | None = None
    overlap: int = SHOT_OVERLAP_DEFAULT
    fps: float | None = None
    sequence: bool = False

    def to_request(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults, so a photo request stays as it was."""
        defaults = ShotOptions()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}


SHOT_REQUEST_FIELDS = tuple(f.name for f in fields(ShotOptions))

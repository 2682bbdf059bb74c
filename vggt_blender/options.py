"""Every choice, enum and default that the command line, the worker request, the preferences and the panel share.

Standard library only (the import-tier test enforces it): Blender's Python imports this module without torch,
and the engine validates against the same tuples the UI offers. Each choice list is written once as
(value, label, description) triples, the shape Blender's EnumProperty `items` takes; `values()` gives the bare
values for argparse `choices` and request checks.
"""

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

from .weights.registry import CHECKPOINTS, DEFAULT_CHECKPOINT

Items = tuple[tuple[str, str, str], ...]


def values(items: Items) -> tuple[str, ...]:
    """The bare values of a choice list, in order."""
    return tuple(item[0] for item in items)


DEVICE_ITEMS: Items = (
    ("auto", "Auto", "CUDA if available, else Apple MPS, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("mps", "Apple MPS", "Apple silicon GPU"),
    ("cpu", "CPU", "Slow, but works everywhere"),
)
PRECISION_ITEMS: Items = (
    ("auto", "Auto", "bf16 on recent NVIDIA GPUs, fp16 on older ones, fp32 on MPS and CPU"),
    ("bf16", "bfloat16", "Half the memory; needs compute capability 8.0+"),
    ("fp16", "float16", "Half the memory"),
    ("fp32", "float32", "Full precision (most memory)"),
    ("int8", "int8 (CPU)", "The aggregator's linear weights quantised to int8: CPU only, more error than bf16"),
)
MODE_ITEMS: Items = (
    ("crop", "Crop", "VGGT: resize to 518 px wide and centre-crop tall photos (the model's usual input); "
                     "VGGT-Omega takes it as Balanced"),
    ("pad", "Pad", "VGGT: resize the long side to 518 px and pad with white: nothing is cut off; "
                   "VGGT-Omega takes it as Max Size"),
)
# VGGT-Omega's own loader modes (preprocess.OMEGA_MODES): both keep the photo's aspect.
OMEGA_MODE_ITEMS: Items = (
    ("balanced", "Balanced", "VGGT-Omega: about (512/16)^2 patches at the photo's aspect (its usual input)"),
    ("max_size", "Max Size", "VGGT-Omega: the longer side 512 px (256 for the text checkpoint), padded"),
)
# A VGGT mode asked of VGGT-Omega means its nearest counterpart: "crop" (the usual input) -> "balanced",
# "pad" (nothing cut off) -> "max_size". An Omega mode asked of VGGT is an error (VGGT has no such loader).
V1_TO_OMEGA_MODE = {"crop": "balanced", "pad": "max_size"}
FAST_PATH_ITEMS: Items = (
    ("auto", "Auto", "Memory-lean inference on CUDA with bf16/fp16 (hundreds of photos fit), standard elsewhere"),
    ("on", "On", "Always the memory-lean path (any device)"),
    ("off", "Off", "Always the standard model call"),
)
CAMERA_MODE_ITEMS: Items = (
    ("per_photo", "Per Photo", "One camera per photo"),
    ("animated", "Animated", "One camera keyed per frame (a shot or image sequence)"),
    ("both", "Both", "Cameras per photo and one animated camera"),
)
POINT_SOURCE_ITEMS: Items = (
    ("depth", "Depth + Camera", "Unproject predicted depth with the predicted cameras (more accurate)"),
    ("point_map", "Point Map", "The point head's direct prediction"),
)
CHECKPOINT_ITEMS: Items = (
    ("vggt-1b", "VGGT-1B", "Official VGGT-1B (CC BY-NC 4.0: non-commercial)"),
    ("vggt-1b-commercial", "VGGT-1B Commercial",
     "Official VGGT-1B-Commercial (gated: needs a Hugging Face token and accepting its licence)"),
    ("vggt-omega-1b-512", "VGGT-Omega-1B-512",
     "VGGT-Omega (2026): far more accurate cameras, no point map (FAIR Noncommercial Research License; "
     "gated: needs a Hugging Face token)"),
    ("vggt-omega-1b-256-text", "VGGT-Omega-1B-256 Text",
     "VGGT-Omega at 256 px with the text-alignment readout (FAIR Noncommercial Research License; gated)"),
)
assert values(CHECKPOINT_ITEMS) == tuple(CHECKPOINTS), "a checkpoint in the registry lacks its label here"

DEVICES = values(DEVICE_ITEMS)
PRECISIONS = values(PRECISION_ITEMS)
MODES = values(MODE_ITEMS)
OMEGA_MODES = values(OMEGA_MODE_ITEMS)
ALL_MODES = MODES + OMEGA_MODES
FAST_PATH_CHOICES = values(FAST_PATH_ITEMS)
CAMERA_MODES = values(CAMERA_MODE_ITEMS)
POINT_SOURCES = values(POINT_SOURCE_ITEMS)
CHECKPOINT_NAMES = values(CHECKPOINT_ITEMS)

DEFAULT_DEVICE = "auto"
DEFAULT_PRECISION = "auto"
DEFAULT_MODE = "crop"
DEFAULT_FAST_PATH = "auto"
# None: the chosen model's preset (--model), else the published configuration of the checkpoint's family.
# Otherwise a preset name of either family ("vggt-1b", "vggt-omega-1b-512", ...) or a config .json file.
DEFAULT_CONFIG = None
DEFAULT_MODEL = None  # None: follow the weights file's keys (or, with no file given, the default checkpoint)

# Process exit codes of the command line and the worker.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CANCELLED = 130  # 128 + SIGINT: Ctrl-C, a cancel, or SIGTERM


@dataclass
class InferenceOptions:
    """How to run the model: the options the CLI flags, the worker request and the preferences carry.

    `weights` None means "search the usual places" (weights/discovery.py) for `model_name`'s checkpoint; `model_name` is
    a CHECKPOINT_NAMES entry or None (the model family follows the weights file's keys); `config` is a preset
    name, a config .json path (or a config object in-process), or None (the model's / checkpoint's own).
    """

    weights: str | None = None
    # The request's / CLI's "model" (named apart from reconstruct()'s `model`, an already loaded model object).
    model_name: str | None = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    mode: str = DEFAULT_MODE
    config: Any = DEFAULT_CONFIG
    fast_path: str = DEFAULT_FAST_PATH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SceneOptions(_PlainOptions):
    """What the scene builders create, as plain data shared by the panel, the CLI (`--blend`) and the builders."""

    _what = "scene option"

    create_cameras: bool = True
    create_point_cloud: bool = True
    create_depth_planes: bool = True
    # One of CAMERA_MODES: "per_photo": one camera per photo; "animated": one camera keyed per frame; "both".
    camera_mode: str = "per_photo"
    # One of POINT_SOURCES: "depth": world points from depth + camera (default, more accurate); "point_map".
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


__all__ = [
    "values", "DEVICE_ITEMS", "PRECISION_ITEMS", "MODE_ITEMS", "FAST_PATH_ITEMS", "CAMERA_MODE_ITEMS",
    "POINT_SOURCE_ITEMS", "CHECKPOINT_ITEMS", "DEVICES", "PRECISIONS", "MODES", "OMEGA_MODE_ITEMS", "OMEGA_MODES",
    "ALL_MODES", "V1_TO_OMEGA_MODE", "DEFAULT_MODEL", "FAST_PATH_CHOICES",
    "CAMERA_MODES", "POINT_SOURCES", "CHECKPOINT_NAMES", "DEFAULT_CHECKPOINT", "DEFAULT_DEVICE",
    "DEFAULT_PRECISION", "DEFAULT_MODE", "DEFAULT_FAST_PATH", "DEFAULT_CONFIG", "EXIT_OK", "EXIT_ERROR",
    "EXIT_CANCELLED", "InferenceOptions", "SceneOptions", "ALIGN_METHODS", "DEFAULT_ALIGN_METHOD",
    "RefineOptions", "REFINE_CAMERA_MODELS", "SOLVE_ERROR_WARN_PX", "ShotOptions", "SHOT_REQUEST_FIELDS",
    "FRAME_SELECTION_FIELDS",
    "SHOT_OVERLAP_DEFAULT", "SEQUENCE_FPS_DEFAULT",
]

# How `align` / `reconstruct --align` stand the scene upright (geometry/alignment.py).
ALIGN_METHODS = ("auto", "floor", "cameras", "none")
DEFAULT_ALIGN_METHOD = "auto"


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
# Of those, the ones that choose frames (shot/selection.FrameSelection); a frame option asks for a shot.
FRAME_SELECTION_FIELDS = ("every", "start", "end", "max_frames")

"""Scene and window-manager properties: the photo list, reconstruction options, and the running job's state."""

from __future__ import annotations

import os
from dataclasses import fields

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .registration import register_classes, unregister_classes
from .vggt_blender import options as opt
from .vggt_blender.options import SceneOptions

_DEFAULTS = SceneOptions()


class SceneOptionProperties:
    """The SceneOptions fields as Blender properties, declared once for the panel's settings and the import
    operator. A mixin of annotations only: Blender collects properties from the annotations of base classes."""

    create_cameras: BoolProperty(name="Cameras", default=_DEFAULTS.create_cameras,
                                 description="Create one camera per photo (and/or an animated camera)")
    create_point_cloud: BoolProperty(name="Point Cloud", default=_DEFAULTS.create_point_cloud,
                                     description="Create the point cloud (Geometry Nodes, filtered live)")
    create_depth_planes: BoolProperty(name="Depth Planes", default=_DEFAULTS.create_depth_planes,
                                      description="Create one depth-displaced, photo-textured plane per photo")
    camera_mode: EnumProperty(
        name="Camera Mode",
        items=opt.CAMERA_MODE_ITEMS,
        default=_DEFAULTS.camera_mode,
    )
    point_source: EnumProperty(
        name="Points From",
        items=opt.POINT_SOURCE_ITEMS,
        default=_DEFAULTS.point_source,
    )
    min_confidence: FloatProperty(
        name="Min Confidence", default=_DEFAULTS.min_confidence, min=1.0, soft_max=20.0,
        description="Initial confidence threshold (raw model confidence, at least 1); adjustable live on the "
                    "modifiers later",
    )
    max_points: IntProperty(
        name="Max Points", default=_DEFAULTS.max_points, min=1, soft_min=1000, soft_max=10_000_000,
        description="Points are randomly thinned to at most this many",
    )
    plane_step: IntProperty(
        name="Plane Step", default=_DEFAULTS.plane_step, min=1, max=64,
        description="Depth planes: one vertex every this many model pixels",
    )
    scale: FloatProperty(
        name="Scale", default=_DEFAULTS.scale, min=1e-6, soft_min=0.01, soft_max=100.0,
        description="Scene units per reconstruction unit (VGGT's scale is not metric)",
    )
    point_radius: FloatProperty(name="Point Radius", default=_DEFAULTS.point_radius, min=0.0, soft_max=0.1,
                                description="Radius of each point in scene units (after Scale: it is not "
                                            "multiplied by Scale)")
    background_images: BoolProperty(name="Photos as Backgrounds", default=_DEFAULTS.background_images,
                                    description="Show each photo as its camera's background image")


# Every SceneOptions field has exactly one property above (checked at import: a new field cannot be forgotten).
assert set(SceneOptionProperties.__annotations__) == {f.name for f in fields(SceneOptions)}


def scene_options_from(props: object) -> SceneOptions:
    """SceneOptions from anything carrying the SceneOptionProperties (the panel's settings, the operator)."""
    # Cast through each default's type: Blender hands back its own numbers, the builders want plain Python.
    return SceneOptions(**{f.name: type(getattr(_DEFAULTS, f.name))(getattr(props, f.name))
                           for f in fields(SceneOptions)})


class VGGT_PG_photo(bpy.types.PropertyGroup):
    filepath: StringProperty(name="Photo", subtype="FILE_PATH")


class VGGT_PG_settings(SceneOptionProperties, bpy.types.PropertyGroup):
    """Per-scene: which photos, how to preprocess, what to build."""

    photos: CollectionProperty(type=VGGT_PG_photo)
    photo_index: IntProperty(default=0, min=0)
    name: StringProperty(
        name="Name", default="",
        description="Name of the new collection and of the reconstruction file (empty: the photos' folder)",
    )
    mode: EnumProperty(
        name="Fit",
        items=opt.MODE_ITEMS,
        default=opt.DEFAULT_MODE,
    )

    # A shot (video file or image sequence) instead of photos: see operators/shot.py.
    shot_path: StringProperty(name="Shot", default="", subtype="FILE_PATH",
                              description="A movie file, or one file of a numbered image sequence")
    shot_every: IntProperty(name="Every", default=1, min=1, description="Use every N-th frame")
    shot_start: IntProperty(name="Start", default=0, min=0, description="First frame (0-based)")
    shot_end: IntProperty(name="End", default=-1, min=-1, description="Last frame, inclusive (-1: the last)")
    shot_max_frames: IntProperty(name="Max Frames", default=0, min=0,
                                 description="At most this many frames, spread over the shot (0: no limit)")
    refine_cameras: BoolProperty(
        name="Refine Cameras", default=False,
        description="After the model: bundle-adjust the cameras against features matched in the photos (takes "
                    "minutes on a CPU; in Server mode it runs on the server)")
    shot_refine: BoolProperty(
        name="Refine and Track", default=True,
        description="After the model: bundle-adjust one lens and the camera path against features matched in "
                    "the frames, and put those tracks into the Movie Clip's tracking data (takes minutes on a CPU)")

    def photo_paths(self) -> list[str]:
        return [bpy.path.abspath(p.filepath) for p in self.photos if p.filepath]

    def scene_options(self) -> SceneOptions:
        return scene_options_from(self)

    def reconstruction_name(self) -> str:
        """The user's name, else the folder of the first photo, else "vggt"."""
        if self.name.strip():
            return self.name.strip()
        paths = self.photo_paths()
        if paths:
            folder = os.path.basename(os.path.dirname(os.path.abspath(paths[0])))
            if folder:
                return folder
        return "vggt"


class VGGT_PG_warning(bpy.types.PropertyGroup):
    text: StringProperty(name="Warning", default="")


class VGGT_PG_job(bpy.types.PropertyGroup):
    """The running (or last) reconstruction, shown by the panel. Lives on the window manager: never saved."""

    running: BoolProperty(default=False)
    stage: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")
    last_error: StringProperty(default="")
    last_error_code: StringProperty(default="")  # the VGGTError code of last_error ("no_weights", ...)
    log_path: StringProperty(default="", subtype="FILE_PATH")
    last_result: StringProperty(default="")
    # The last run's warnings (the worker's "a third of the portrait photo cropped away", "photos padded",
    # implausible cameras ...): one line each, shown by the panel after the run. Fill with set_job_warnings.
    last_warnings: CollectionProperty(type=VGGT_PG_warning)


def set_job_warnings(job: VGGT_PG_job, lines) -> None:
    """Replace the last run's warnings shown in the panel (window_manager.vggt_job.last_warnings)."""
    job.last_warnings.clear()
    for line in lines or ():
        text = " ".join(str(line).split())
        if text:
            job.last_warnings.add().text = text[:400]


classes = (VGGT_PG_photo, VGGT_PG_settings, VGGT_PG_warning, VGGT_PG_job)


def register() -> None:
    register_classes(classes)
    bpy.types.Scene.vggt = PointerProperty(type=VGGT_PG_settings)
    bpy.types.WindowManager.vggt_job = PointerProperty(type=VGGT_PG_job)


def unregister() -> None:
    for owner, attr in ((bpy.types.WindowManager, "vggt_job"), (bpy.types.Scene, "vggt")):
        if hasattr(owner, attr):
            delattr(owner, attr)
    unregister_classes(classes)

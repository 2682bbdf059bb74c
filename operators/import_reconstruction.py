"""File > Import > VGGT Reconstruction (.npz): build the scene of a saved reconstruction file."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..vggt_blender.errors import VGGTError
from ..vggt_blender.scene_options import SceneOptions

_DEFAULTS = SceneOptions()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:400]


class VGGT_OT_import_reconstruction(bpy.types.Operator, ImportHelper):
    """Import a VGGT reconstruction file (.npz) as cameras, a point cloud and depth planes"""

    bl_idname = "vggt.import_reconstruction"
    bl_label = "Import VGGT Reconstruction"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    name: StringProperty(name="Name", default="",
                         description="Name of the new collection (empty: the photos' folder)")
    create_cameras: BoolProperty(name="Cameras", default=_DEFAULTS.create_cameras)
    create_point_cloud: BoolProperty(name="Point Cloud", default=_DEFAULTS.create_point_cloud)
    create_depth_planes: BoolProperty(name="Depth Planes", default=_DEFAULTS.create_depth_planes)
    camera_mode: EnumProperty(
        name="Camera Mode",
        items=(
            ("per_photo", "Per Photo", "One camera per photo"),
            ("animated", "Animated", "One camera keyed per frame"),
            ("both", "Both", "Cameras per photo and one animated camera"),
        ),
        default=_DEFAULTS.camera_mode,
    )
    point_source: EnumProperty(
        name="Points From",
        items=(
            ("depth", "Depth + Camera", "Unproject predicted depth with the predicted cameras"),
            ("point_map", "Point Map", "The point head's direct prediction"),
        ),
        default=_DEFAULTS.point_source,
    )
    min_confidence: FloatProperty(name="Min Confidence", default=_DEFAULTS.min_confidence, min=0.0,
                                  soft_min=1.0, soft_max=20.0,
                                  description="Initial confidence threshold; adjustable live on the modifiers")
    max_points: IntProperty(name="Max Points", default=_DEFAULTS.max_points, min=1, soft_max=10_000_000)
    plane_step: IntProperty(name="Plane Step", default=_DEFAULTS.plane_step, min=1, max=64,
                            description="Depth planes: one vertex every this many model pixels")
    scale: FloatProperty(name="Scale", default=_DEFAULTS.scale, min=1e-6, soft_min=0.01, soft_max=100.0,
                         description="Scene units per reconstruction unit")
    point_radius: FloatProperty(name="Point Radius", default=_DEFAULTS.point_radius, min=0.0, soft_max=0.1)
    background_images: BoolProperty(name="Photos as Backgrounds", default=_DEFAULTS.background_images)

    def scene_options(self) -> SceneOptions:
        return SceneOptions(
            create_cameras=self.create_cameras,
            create_point_cloud=self.create_point_cloud,
            create_depth_planes=self.create_depth_planes,
            camera_mode=self.camera_mode,
            point_source=self.point_source,
            min_confidence=float(self.min_confidence),
            max_points=int(self.max_points),
            plane_step=int(self.plane_step),
            scale=float(self.scale),
            point_radius=float(self.point_radius),
            background_images=self.background_images,
        )

    def execute(self, context):
        from ..scene.build import import_reconstruction_file

        try:
            collection = import_reconstruction_file(self.filepath, self.scene_options(), context,
                                                    name=self.name.strip() or None)
        except VGGTError as exc:
            self.report({"ERROR"}, _one_line(exc))
            return {"CANCELLED"}
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, _one_line(f"{self.filepath}: {exc}"))
            return {"CANCELLED"}
        except Exception as exc:  # a builder bug: say so in one line, details on the console
            import traceback

            traceback.print_exc()
            self.report({"ERROR"}, _one_line(f"{self.filepath}: building the scene failed: "
                                             f"{type(exc).__name__}: {exc} (details in the system console)"))
            return {"CANCELLED"}
        for warning in collection.get("vggt_warnings", []):
            self.report({"WARNING"}, _one_line(warning))
        self.report({"INFO"}, f"Imported {len(collection.objects)} objects into collection '{collection.name}'")
        return {"FINISHED"}


def menu_func_import(self, context) -> None:
    self.layout.operator(VGGT_OT_import_reconstruction.bl_idname, text="VGGT Reconstruction (.npz)")


classes = (VGGT_OT_import_reconstruction,)

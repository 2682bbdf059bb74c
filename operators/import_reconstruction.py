"""File > Import > VGGT Reconstruction (.npz): build the scene of a saved reconstruction file."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from ..properties import SceneOptionProperties, scene_options_from
from ..vggt_blender.errors import VGGTError
from ..vggt_blender.options import SceneOptions
from .reconstruct import one_line


class VGGT_OT_import_reconstruction(SceneOptionProperties, bpy.types.Operator, ImportHelper):
    """Import a VGGT reconstruction file (.npz) as cameras, a point cloud and depth planes"""

    bl_idname = "vggt.import_reconstruction"
    bl_label = "Import VGGT Reconstruction"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    name: StringProperty(name="Name", default="",
                         description="Name of the new collection (empty: the photos' folder)")

    def scene_options(self) -> SceneOptions:
        return scene_options_from(self)

    def execute(self, context):
        from ..scene.build import import_reconstruction_file

        try:
            collection = import_reconstruction_file(self.filepath, self.scene_options(), context,
                                                    name=self.name.strip() or None)
        except VGGTError as exc:
            self.report({"ERROR"}, one_line(exc))
            return {"CANCELLED"}
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, one_line(f"{self.filepath}: {exc}"))
            return {"CANCELLED"}
        except Exception as exc:  # a builder bug: say so in one line, details on the console
            import traceback

            traceback.print_exc()
            self.report({"ERROR"}, one_line(f"{self.filepath}: building the scene failed: "
                                             f"{type(exc).__name__}: {exc} (details in the system console)"))
            return {"CANCELLED"}
        for warning in collection.get("vggt_warnings", []):
            self.report({"WARNING"}, one_line(warning))
        self.report({"INFO"}, f"Imported {len(collection.objects)} objects into collection '{collection.name}'")
        return {"FINISHED"}


def menu_func_import(self, context) -> None:
    self.layout.operator(VGGT_OT_import_reconstruction.bl_idname, text="VGGT Reconstruction (.npz)")


classes = (VGGT_OT_import_reconstruction,)


def register() -> None:
    # Reconstructions made in an unsaved file move beside the .blend when it is saved.
    from ..scene.project_files import register_handlers

    register_handlers()


def unregister() -> None:
    from ..scene.project_files import unregister_handlers

    unregister_handlers()

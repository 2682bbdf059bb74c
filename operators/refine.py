"""`vggt.refine_cameras`: bundle-adjust the active reconstruction's cameras, then rebuild its collection.

The refinement (numpy + pycolmap, vggt_blender/refine/) runs in the inference runtime, never in Blender: a refine
request (`{"type": "refine", "input": ..., "output": ...}`, jobs/protocol.py) is a `LocalJob` like a
reconstruction, on the same kept worker, followed by the same task (operators/reconstruct.py `WorkerRun`) with
progress and the panel's Cancel. The refined file is written beside the collection's file
(`<name>_refined.npz`, never over it). On success the collection is rebuilt from it (the panel's scene options,
the collection's own scale) and only then replaces the old one, under its name: one undo step; a failed or
cancelled refinement, or a failed build, leaves the scene as it was.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty

from .. import runtime
from ..vggt_blender.errors import VGGTError
from ..vggt_blender.jobs.local import LocalJob
from ..vggt_blender.jobs.protocol import REFINE
from ..vggt_blender.options import REFINE_CAMERA_MODELS
from .alignment import reconstruction_collection
from .reconstruct import (JobOperator, REFINE_TASK, WorkerRun, begin_run, leave_edit_modes, unique_output_path,
                          worker_task_running)

TASK = REFINE_TASK
STAGE_LABELS = {"starting": "Starting", "refining": "Refining cameras", "writing": "Writing",
                "building": "Building scene"}
_STAGE_SPAN = {"starting": (0.0, 0.02), "refining": (0.02, 0.93), "writing": (0.93, 0.96), "building": (0.96, 1.0)}


class RefineRun(WorkerRun):
    """One refinement of `collection`'s reconstruction file, then its rebuild."""

    name = TASK
    what = "camera refinement"
    done_verb = "Refined"
    stage_labels = STAGE_LABELS
    stage_span = _STAGE_SPAN

    def __init__(self, context: bpy.types.Context, collection: bpy.types.Collection, refine: dict) -> None:
        super().__init__()
        prefs = runtime.get_prefs(context)
        self.collection_name = collection.name
        stored = str(collection.get("vggt_reconstruction", ""))
        source = bpy.path.abspath(stored) if stored else ""
        if not source:
            raise VGGTError(f"collection '{collection.name}' names no reconstruction file")
        if not Path(source).is_file():
            raise VGGTError(f"{source}: the reconstruction file of '{collection.name}' does not exist", file=source)
        self.source = source
        # What to build: the panel's choices, at the scale the collection was built with.
        self.options = replace(context.scene.vggt.scene_options(),
                               scale=float(collection.get("vggt_scale", context.scene.vggt.scale)))
        self.output = unique_output_path(Path(source).parent, f"{Path(source).stem}_refined")
        self.log_path = str(self.output.with_suffix(".log"))
        self.request = {"type": REFINE, "input": source, "output": str(self.output), "refine": refine or True}
        self.python = runtime.runtime_python(prefs)
        if self.python is None and runtime.uses_server(prefs):
            raise VGGTError("Refine Cameras runs in this machine's inference runtime, which Server mode does not "
                            "set up: tick Refine Cameras before Reconstruct to refine on the server, or install "
                            "the runtime in the add-on preferences")
        self.job = LocalJob(self.python, self.request, self.log_path, caller="blender",
                            keep_alive=bool(getattr(prefs, "keep_worker", True)))
        self.message = "Starting the inference runtime"

    def _build_scene(self, path: str) -> bpy.types.Collection:
        """The refined collection, replacing the old one only once it is built."""
        from ..scene.build import build_scene, remove_collection
        from ..vggt_blender.io.reconstruction import load_reconstruction

        context = bpy.context
        old = bpy.data.collections.get(self.collection_name)
        if old is None:
            raise VGGTError(f"the collection '{self.collection_name}' is gone; the refined cameras are in {path}",
                            file=path)
        rec = load_reconstruction(path)
        leave_edit_modes(context)
        parents = [c for c in (context.scene.collection, *bpy.data.collections) if old.name in c.children]
        # Built first (a failed build rolls itself back and raises): the old collection goes only on success.
        new = build_scene(rec, self.options, f"{self.collection_name} refined", context=context, source_path=path)
        remove_collection(old)
        new.name = self.collection_name
        for parent in parents:
            if new.name not in parent.children:
                parent.children.link(new)
        if parents and context.scene.collection not in parents:
            context.scene.collection.children.unlink(new)
        return new

    def done_report(self) -> str:
        refinement = (self.job.result or {}).get("summary", {}).get("refinement", {})
        mean, worst = refinement.get("mean_error_px"), refinement.get("max_error_px")
        errors = f": mean solve error {mean:.2f} px, worst {worst:.2f} px" if mean is not None else ""
        name = self.collection.name if self.collection is not None else self.collection_name
        return f"VGGT: refined the cameras of {name}{errors}"


class VGGT_OT_refine_cameras(JobOperator, bpy.types.Operator):
    """Refine the active reconstruction's cameras by bundle adjustment against features matched in its photos,
    then rebuild it from the refined file (the old collection is replaced only when that succeeds)"""

    bl_idname = "vggt.refine_cameras"
    bl_label = "Refine Cameras"
    bl_options = {"UNDO"}

    shared_intrinsics: BoolProperty(
        name="Shared Intrinsics", default=False,
        description="One focal length (and lens) for every photo: one physical camera, a video")
    camera_model: EnumProperty(
        name="Lens Model", default="pinhole",
        items=[(m, m.replace("_", " ").title(), f"COLMAP lens model: {m}") for m in REFINE_CAMERA_MODELS])

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return reconstruction_collection(context) is not None and not worker_task_running()

    def _begin(self, context: bpy.types.Context) -> WorkerRun | None:
        collection = reconstruction_collection(context)
        if collection is None:
            self.report({"ERROR"}, "VGGT: select an object of a reconstruction to refine")
            return None
        options = {"shared_intrinsics": bool(self.shared_intrinsics), "camera_model": str(self.camera_model)}
        return begin_run(self, context, lambda ctx: RefineRun(ctx, collection, options))


classes = (VGGT_OT_refine_cameras,)

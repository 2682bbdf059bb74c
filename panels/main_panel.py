"""The 3D viewport sidebar tab "VGGT": photos, options, Reconstruct / progress / Cancel, last error."""

from __future__ import annotations

import os

import bpy

from .. import runtime
from ..scene.node_groups import PLANE_MIN_CONFIDENCE_PROP
from ..vggt_blender.io.exif_orientation import exif_orientation, upright_size
from ..vggt_blender.options import SOLVE_ERROR_WARN_PX
from .shot_panel import draw_shot

# What the panel shows about the photos, read once per photo list: the panel redraws often (every progress
# tick), and stat()-ing hundreds of photos (maybe on a network drive) each time would make it sluggish.
_photo_list_key: tuple[str, ...] = ()
_photo_sizes: dict[str, int] = {}  # bytes, -1 when missing
_photo_dims: dict[str, tuple[int, int] | None] = {}


def _cache_for(paths: list[str]) -> None:
    """Forget the cached sizes when the photo list changed (photos added, removed, or the list replaced)."""
    global _photo_list_key
    key = tuple(paths)
    if key != _photo_list_key:
        _photo_list_key = key
        _photo_sizes.clear()
        _photo_dims.clear()


def photo_file_size(path: str) -> int:
    """Bytes of one photo (-1 if missing), read once per photo list."""
    if path not in _photo_sizes:
        try:
            _photo_sizes[path] = os.stat(path).st_size
        except OSError:
            _photo_sizes[path] = -1
    return _photo_sizes[path]


def photo_dimensions(path: str) -> tuple[int, int] | None:
    """Pixel size of one photo as it is shown upright (EXIF orientation applied: Blender's loader ignores
    it), decoded once with Blender's image loader, then cached."""
    if path not in _photo_dims:
        size = None
        if photo_file_size(path) >= 0:
            try:
                import imbuf

                buf = imbuf.load(path)
                width, height = (int(v) for v in buf.size)
                buf.free()
                size = upright_size(width, height, exif_orientation(path))
            except Exception:
                size = None
        _photo_dims[path] = size
    return _photo_dims[path]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 0 else "missing"


class VGGT_UL_photos(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        path = bpy.path.abspath(item.filepath)
        row = layout.row()
        size = photo_file_size(path)
        row.label(text=os.path.basename(path), icon="IMAGE_DATA" if size >= 0 else "ERROR")
        row.label(text=_mb(size))


class VGGT_PT_main(bpy.types.Panel):
    bl_idname = "VGGT_PT_main"
    bl_label = "VGGT Reconstruction"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VGGT"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.vggt
        job = context.window_manager.vggt_job

        paths = settings.photo_paths()
        _cache_for(paths)  # before the photo list draws its rows

        # Photos
        col = layout.column(align=True)
        row = col.row(align=True)
        row.operator("vggt.add_photos", text="Add Photos / Folder", icon="FILE_FOLDER")
        row.operator("vggt.remove_photo", text="", icon="REMOVE")
        row.operator("vggt.clear_photos", text="", icon="X")
        col.template_list("VGGT_UL_photos", "", settings, "photos", settings, "photo_index", rows=3)
        if paths:
            total = sum(max(photo_file_size(p), 0) for p in paths)
            col.label(text=f"{len(paths)} photos, {_mb(total)}")
            if 0 <= settings.photo_index < len(paths):
                dims = photo_dimensions(paths[settings.photo_index])
                if dims:
                    col.label(text=f"Selected: {dims[0]} × {dims[1]} px")
        else:
            col.label(text="No photos chosen", icon="INFO")
        draw_shot(layout, settings)  # or a shot: panels/shot_panel.py

        # Options
        box = layout.box()
        box.prop(settings, "name")
        family = runtime.selected_family()
        box.label(text=f"Model: {runtime.selected_model_label()}")
        box.row().prop(settings, "mode", expand=True)
        box.label(text="Create:")
        row = box.row(align=True)
        row.prop(settings, "create_cameras", toggle=True)
        row.prop(settings, "create_point_cloud", toggle=True)
        row.prop(settings, "create_depth_planes", toggle=True)
        if settings.create_cameras:
            box.prop(settings, "camera_mode")
        if settings.create_point_cloud:
            if family == "vggt-omega":  # no point head: depth + camera is the only point source
                box.label(text="Points: Depth + Camera (VGGT-Omega has no point map)")
            else:
                box.prop(settings, "point_source")
            box.prop(settings, "max_points")
            box.prop(settings, "point_radius")
        box.prop(settings, "min_confidence")
        if settings.create_depth_planes:
            box.prop(settings, "plane_step")
        box.prop(settings, "scale")
        box.prop(settings, "background_images")
        if not settings.shot_path:  # a shot has its own Refine and Track (panels/shot_panel.py)
            box.prop(settings, "refine_cameras")

        # Run
        if job.running:
            row = layout.row(align=True)
            text = f"{job.stage} {job.progress * 100:.0f}%"
            if hasattr(row, "progress"):  # UILayout.progress: Blender 4.0+
                row.progress(factor=job.progress, type="BAR", text=text)
            else:
                row.label(text=text)
            row.operator("vggt.cancel_reconstruction", text="", icon="CANCEL")
            if job.message:
                layout.label(text=job.message[:100])
        else:
            row = layout.row()
            row.scale_y = 1.5
            row.enabled = bool(paths) or bool(settings.shot_path)  # photos, or a chosen shot alone
            row.operator("vggt.reconstruct", icon="OUTLINER_OB_CAMERA")
            if not runtime.uses_server() and runtime.runtime_python() is None:
                layout.label(text="No inference runtime: see the add-on preferences", icon="ERROR")
        if job.last_error and not job.running:
            layout.label(text=job.last_error[:200], icon="ERROR")
            if job.log_path:
                layout.label(text=f"Log: {job.log_path}")
        elif job.message and not job.running:
            layout.label(text=job.message[:200], icon="INFO")
        if not job.running:
            draw_warnings(layout, [w.text for w in job.last_warnings], "Last run")

        # The reconstruction the active object belongs to: its shared depth-plane control and its warnings.
        collection = active_reconstruction(context)
        if collection is not None:
            box = layout.box()
            box.label(text=collection.name, icon="OUTLINER_COLLECTION")
            if PLANE_MIN_CONFIDENCE_PROP in collection:
                box.prop(collection, f'["{PLANE_MIN_CONFIDENCE_PROP}"]', text="Depth Planes Min Confidence")
            draw_warnings(box, [str(w) for w in collection.get("vggt_warnings", [])], "Import")
            # Bundle adjustment in the runtime (operators/refine.py); progress and Cancel as for Reconstruct.
            refine = box.operator("vggt.refine_cameras", icon="CON_CAMERASOLVER")
            # A video or image sequence is one physical camera: solve one lens for every frame.
            refine.shared_intrinsics = collection.get("vggt_source_kind") in ("video", "sequence")

        # Alignment of the reconstruction the active object belongs to (operators/alignment.py).
        ob = context.active_object
        if ob is not None and any(c.get("vggt_reconstruction") is not None for c in ob.users_collection):
            box = layout.box()
            box.label(text="Alignment")
            box.operator("vggt.level_to_floor", icon="AXIS_TOP")
            row = box.row(align=True)
            row.operator("vggt.set_origin", text="Origin to Cursor", icon="PIVOT_CURSOR").source = "CURSOR"
            row.operator("vggt.set_origin", text="Origin to Selection", icon="PIVOT_MEDIAN").source = "SELECTION"
            box.operator("vggt.set_scale", icon="DRIVER_DISTANCE")

        # A reconstruction camera is selected: look through it with its own photo's resolution and aspect.
        ob = context.active_object
        if ob is not None:
            draw_solve_error(layout, ob)
        if ob is not None and ob.type == "CAMERA" and ob.get("vggt_kind") in ("camera", "animated_camera"):
            op = layout.operator("vggt.look_through", text=f"Look Through {ob.name}", icon="VIEW_CAMERA")
            op.camera = ob.name


MAX_WARNING_LINES = 5


def draw_warnings(layout, lines: list[str], title: str) -> None:
    """A few warning lines (then how many more): what the user must know, not the whole log."""
    if not lines:
        return
    col = layout.column(align=True)
    col.label(text=f"{title}: {len(lines)} warning{'s' if len(lines) != 1 else ''}", icon="ERROR")
    for line in lines[:MAX_WARNING_LINES]:
        col.label(text=line[:200])
    if len(lines) > MAX_WARNING_LINES:
        col.label(text=f"... and {len(lines) - MAX_WARNING_LINES} more (see the log)")


def active_reconstruction(context: bpy.types.Context):
    """The reconstruction collection holding the active object, if any."""
    ob = getattr(context, "active_object", None)
    if ob is None or "vggt_kind" not in ob:
        return None
    for collection in ob.users_collection:
        if "vggt_reconstruction" in collection:
            return collection
    return None


MAX_FLAGGED_ROWS = 8


def draw_solve_error(layout, ob) -> None:
    """For a refined reconstruction the active object belongs to: mean and worst camera solve error, and the
    cameras above SOLVE_ERROR_WARN_PX in red."""
    collection = next((c for c in ob.users_collection if "vggt_solve_error_mean" in c), None)
    if collection is None:
        return
    box = layout.box()
    mean, worst = float(collection["vggt_solve_error_mean"]), float(collection["vggt_solve_error_max"])
    row = box.row()
    row.alert = worst > SOLVE_ERROR_WARN_PX
    row.label(text=f"Solve error: mean {mean:.2f} px, worst {worst:.2f} px", icon="CON_CAMERASOLVER")
    flagged = sorted(((float(o["vggt_solve_error"]), o.name) for o in collection.objects
                      if "vggt_solve_error" in o and float(o["vggt_solve_error"]) > SOLVE_ERROR_WARN_PX),
                     reverse=True)
    for err, name in flagged[:MAX_FLAGGED_ROWS]:
        row = box.row()
        row.alert = True
        row.label(text=f"{name}: {err:.2f} px", icon="ERROR")
    if len(flagged) > MAX_FLAGGED_ROWS:
        box.label(text=f"... and {len(flagged) - MAX_FLAGGED_ROWS} more above {SOLVE_ERROR_WARN_PX:g} px")
    if "vggt_solve_error" in ob:
        box.label(text=f"{ob.name}: {float(ob['vggt_solve_error']):.2f} px")


classes = (VGGT_UL_photos, VGGT_PT_main)

"""The panel's shot section: choose a movie or image sequence, see its frames, fps, size and the stride."""

from __future__ import annotations

import os

import bpy

from ..scene.shot import probe_clip, selected_count


def draw_shot(layout: bpy.types.UILayout, settings) -> None:
    col = layout.column(align=True)
    row = col.row(align=True)
    row.operator("vggt.choose_shot", text="Movie / Image Sequence", icon="FILE_MOVIE")
    if settings.shot_path:
        row.operator("vggt.clear_shot", text="", icon="X")
    if not settings.shot_path:
        return
    info = probe_clip(settings.shot_path)
    name = os.path.basename(bpy.path.abspath(settings.shot_path))
    if info is None:
        col.label(text=f"{name}: Blender cannot open it", icon="ERROR")
        return
    kind = "sequence" if info["sequence"] else "movie"
    col.label(text=f"{name} ({kind})", icon="SEQUENCE" if info["sequence"] else "FILE_MOVIE")
    col.label(text=f"{info['frames']} frames, {info['fps']:.3f} fps, {info['width']} × {info['height']} px")
    row = col.row(align=True)
    row.prop(settings, "shot_every")
    row.prop(settings, "shot_max_frames")
    row = col.row(align=True)
    row.prop(settings, "shot_start")
    row.prop(settings, "shot_end")
    count = selected_count(info["frames"], settings.shot_every, settings.shot_start, settings.shot_end,
                           settings.shot_max_frames)
    col.label(text=f"Stride {settings.shot_every}: {count} frame(s) to reconstruct",
              icon="INFO" if count else "ERROR")
    col.prop(settings, "shot_refine")

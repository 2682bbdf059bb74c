"""Export a reconstruction's points to other tools: binary PLY (numpy only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from ..errors import RequestError
from .reconstruction import Reconstruction
from ..geometry import selection

def select_points(rec: Reconstruction, source: str = "depth", min_confidence: float = 1.0,
                  max_points: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyz float32 [P,3], rgb uint8 [P,3], confidence float32 [P]) of the points geometry.selection keeps."""
    picked = selection.select_points(rec, source, min_confidence, max_points, seed)
    return picked.xyz, picked.rgb, picked.confidence


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray, confidence: np.ndarray | None = None,
              frame: str = "OpenCV world (first camera)") -> Path:
    """Binary little-endian PLY with x y z (float), red green blue (uchar) and optionally confidence (float).

    Written atomically (temporary file in the same folder, then renamed)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RequestError(f"{path}: the folder does not exist", file=str(path))
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if confidence is not None:
        fields.append(("confidence", "<f4"))
    rows = np.empty(len(xyz), dtype=fields)
    for axis, name in enumerate(("x", "y", "z")):
        rows[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        rows[name] = rgb[:, channel]
    if confidence is not None:
        rows["confidence"] = confidence
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"comment vggt_blender: {frame}",
              f"element vertex {len(rows)}"]
    header += [f"property {types[kind]} {name}" for name, kind in fields]
    header.append("end_header")
    with atomic_write(path, RequestError, "the PLY file") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(rows.tobytes())
    return path


def export_ply(rec: Reconstruction, path: str | os.PathLike, source: str = "depth", min_confidence: float = 1.0,
               max_points: int | None = None) -> int:
    """Write the selected points of `rec` to a PLY file, in the scene frame (the file's alignment applied: what
    Blender shows, Z up); return the number of points.

    No point passing the threshold is an error (an empty PLY is never what the user wanted)."""
    from ..geometry.alignment import apply_alignment

    xyz, rgb, conf = select_points(rec, source, min_confidence, max_points)
    if len(xyz) == 0:
        conf_all = rec.depth_conf if source == "depth" else rec.point_map_conf
        valid = conf_all[rec.valid_mask]
        best = f"{float(valid.max()):.3g}" if valid.size else "none"
        raise RequestError(f"{path}: no point has confidence >= {min_confidence:g} (the most confident has "
                           f"{best}); choose a lower --min-confidence", file=str(path))
    write_ply(path, apply_alignment(rec.alignment, xyz), rgb, conf,
              frame="scene, Z up (the reconstruction's alignment applied)")
    return len(xyz)

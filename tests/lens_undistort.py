"""Blender's own undistortion of a plate, for checking the tracking camera the import writes (scene/lens.py).

A plate is drawn with soft dots at the COLMAP-distorted photo positions of a grid of points; the compositor's
Movie Distortion node (Undistort) undistorts it with a clip's tracking camera; each dot's centroid is then where
Blender thinks the point's undistorted (pinhole) position is. Used by tests/test_scene_lens.py and
bench/check_lens_distortion.py; needs bpy (any of 4.2 to 5.2).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
import numpy as np

W, H, F, CX, CY = 640, 480, 500.0, 322.5, 237.0
SIGMA = 1.2  # px: a soft dot keeps its centroid under resampling
CASES = {
    "SIMPLE_RADIAL k=-0.1": ("SIMPLE_RADIAL", [-0.1]),
    "OPENCV radial only": ("OPENCV", [-0.08, 0.02, 0.0, 0.0]),
    "OPENCV with p1, p2": ("OPENCV", [-0.08, 0.02, 1.5e-3, -1.0e-3]),
}


def colmap_distort(model: str, params: list[float], xy: np.ndarray) -> np.ndarray:
    """Normalised pinhole coordinates (y down) -> distorted ones, as COLMAP's camera models do."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    if model == "SIMPLE_RADIAL":
        radial = 1 + params[0] * r2
        return np.stack([x * radial, y * radial], 1)
    k1, k2, p1, p2 = params
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                     y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], 1)


def plate(points_px: np.ndarray) -> np.ndarray:
    """RGBA float image (rows top-down) with a Gaussian dot at each (x, y) photo pixel (continuous coordinates)."""
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    img = np.zeros((H, W), np.float32)
    for x, y in points_px:
        img += np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * SIGMA ** 2))
    rgba = np.zeros((H, W, 4), np.float32)
    rgba[..., :3], rgba[..., 3] = img[..., None], 1.0
    return rgba


def save_exr(rgba: np.ndarray, path: Path) -> None:
    image = bpy.data.images.new(path.stem, W, H, float_buffer=True)
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender's rows run bottom-up
    image.filepath_raw, image.file_format = str(path), "OPEN_EXR"
    image.save()
    bpy.data.images.remove(image)


def undistort(path: Path, clip, out: Path) -> np.ndarray:
    """The compositor's Movie Distortion node (Undistort) on the image at `path`, read back top-down."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    if scene.camera is None:
        ob = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        scene.collection.objects.link(ob)
        scene.camera = ob
    if hasattr(scene, "compositing_node_group"):  # Blender 5: the compositor is a node group
        tree = bpy.data.node_groups.new("check", "CompositorNodeTree")
        scene.compositing_node_group = tree
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        output = tree.nodes.new("NodeGroupOutput")
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        output = tree.nodes.new("CompositorNodeComposite")
    source = tree.nodes.new("CompositorNodeImage")
    source.image = bpy.data.images.load(str(path))
    node = tree.nodes.new("CompositorNodeMovieDistortion")
    node.clip = clip
    if "Type" in node.inputs:
        node.inputs["Type"].default_value = "Undistort"
    else:
        node.distortion_type = "UNDISTORT"
    tree.links.new(source.outputs["Image"], node.inputs["Image"])
    tree.links.new(node.outputs["Image"], output.inputs[0])
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    result = bpy.data.images.load(str(out))
    pixels = np.array(result.pixels[:], np.float32).reshape(H, W, 4)[::-1]
    return pixels[..., 0]


def centroids(lum: np.ndarray, near: np.ndarray, radius: float = 6.0) -> np.ndarray:
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    out = []
    for x, y in near:
        win = (np.abs(u - x) <= radius) & (np.abs(v - y) <= radius)
        w = np.where(win, lum, 0.0)
        out.append((np.sum(w * u) / w.sum(), np.sum(w * v) / w.sum()) if w.sum() > 0 else (np.nan, np.nan))
    return np.array(out)


def measure(lens, model: str, params: list[float], work: Path | None = None) -> dict:
    """Undistort a plate drawn with COLMAP's `model` through the tracking camera that `lens` (the extension's
    scene/lens.py module) writes: errors against the pinhole positions, in photo pixels."""
    work = Path(work or tempfile.mkdtemp(prefix="lens_check_"))
    gx, gy = np.meshgrid(np.linspace(0.08, 0.92, 7) * W, np.linspace(0.1, 0.9, 5) * H)
    pinhole = np.stack([gx.ravel(), gy.ravel()], 1)
    distorted = colmap_distort(model, params, (pinhole - [CX, CY]) / F) * F + [CX, CY]
    bpy.ops.wm.read_homefile(use_empty=True)
    path = work / f"{model}_{'_'.join(f'{p:g}' for p in params)}.exr"
    save_exr(plate(distorted), path)
    clip = bpy.data.movieclips.load(str(path))
    fields, warnings = lens.blender_distortion(model, params)
    lens.set_tracking_camera(clip, F, F, CX, CY, W, H, distortion=fields)
    found = centroids(undistort(path, clip, work / f"out_{path.name}"), pinhole)
    # Some Blender versions' node also moves the whole image by half or whole pixels: the lens model is right
    # when what is left after that one shift is small.
    shift = (found - pinhole).mean(axis=0)
    return {"fields": fields, "warnings": warnings, "error": np.linalg.norm(found - pinhole, axis=1),
            "shift": shift, "shape_error": np.linalg.norm(found - shift - pinhole, axis=1),
            "drawn_error": np.linalg.norm(distorted - pinhole, axis=1), "points": len(pinhole)}

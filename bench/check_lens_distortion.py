"""Does Blender undistort a photo the way the refinement's lens model distorts it? A check through the compositor.

For each COLMAP lens model the refinement solves, a plate is drawn with soft dots at the distorted photo positions
(COLMAP's formulas) of a grid of points; the clip's tracking camera is set by the extension's own
`scene/lens.py` (what an import writes), the compositor's Movie Distortion node undistorts the plate, and each dot's
centroid is compared with the point's pinhole position, where the extension's camera projects it. Run it with the
Python of the Blender to check (bpy as a module):

    .venv-bpy42/bin/python bench/check_lens_distortion.py      # any bpy: 4.2 to 5.2

Prints one row per model: the largest and mean distance in pixels; the uniform shift of the whole image some
Blender versions' node adds and what is left after removing it (the lens model's own error); and the distance
for the plate as drawn (what leaving the distortion out would cost).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vggt_blender.extension_package import load_extension_package  # noqa: E402

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


def main() -> int:
    ext = load_extension_package("_vggt_ext_lens_check")
    lens = importlib.import_module(f"{ext.__name__}.scene.lens")
    gx, gy = np.meshgrid(np.linspace(0.08, 0.92, 7) * W, np.linspace(0.1, 0.9, 5) * H)
    pinhole = np.stack([gx.ravel(), gy.ravel()], 1)
    normalised = (pinhole - [CX, CY]) / F
    work = Path(tempfile.mkdtemp(prefix="lens_check_"))
    print(f"Blender {bpy.app.version_string}, {W}x{H}, f {F} px, {len(pinhole)} points")
    print("| model | undistorted: max / mean px | its uniform shift (x, y) px | max after the shift px "
          "| plate as drawn: max / mean px |")
    print("|---|---:|---:|---:|---:|")
    for name, (model, params) in CASES.items():
        bpy.ops.wm.read_homefile(use_empty=True)
        distorted = colmap_distort(model, params, normalised) * F + [CX, CY]
        path = work / f"{model}_{len(params)}_{abs(hash(name)) % 1000}.exr"
        save_exr(plate(distorted), path)
        clip = bpy.data.movieclips.load(str(path))
        fields, warnings = lens.blender_distortion(model, params)
        lens.set_tracking_camera(clip, F, F, CX, CY, W, H, distortion=fields)
        lum = undistort(path, clip, work / f"out_{path.name}")
        found = centroids(lum, pinhole)
        err = np.linalg.norm(found - pinhole, axis=1)
        # Some Blender versions' node also moves the whole image: the lens model is right when what is left
        # after that one shift is small.
        shift = (found - pinhole).mean(axis=0)
        shape = np.linalg.norm(found - shift - pinhole, axis=1)
        raw = np.linalg.norm(distorted - pinhole, axis=1)
        note = f" ({'; '.join(warnings)})" if warnings else ""
        print(f"| {name} ({fields['distortion_model']}){note} | {err.max():.3f} / {err.mean():.3f} | "
              f"{shift[0]:+.2f}, {shift[1]:+.2f} | {shape.max():.3f} | {raw.max():.2f} / {raw.mean():.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

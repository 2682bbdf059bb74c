"""Ground truth for the refinement tests: a textured floor and boxes rendered with bpy (Cycles, CPU) from
known cameras, with exact depth computed analytically from the same scene description.

Run as a script (`python tests/refine_groundtruth.py OUT_DIR NUM_VIEWS|CAMERAS.npy WIDTH HEIGHT SAMPLES`) it
renders OUT_DIR/view_XX.jpg from `cameras(NUM_VIEWS)`, or OUT_DIR/frame_XXXX.png from the extrinsics [N,3,4]
saved in CAMERAS.npy, and writes OUT_DIR/truth.npz (extrinsics camera-from-world in OpenCV axes, intrinsics
in photo pixels). Imported, it offers `render(...)` and `render_path(...)` (both run the script in a
subprocess so bpy never shares a process with pycolmap) and `depth_maps(...)` (ray casting in numpy, no bpy).

World frame here is OpenCV-like with y down: the floor is the plane y = 0 and boxes stand on it towards -y.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

# (centre x, centre z, size x, height, size z) of boxes standing on the floor y = 0 (up is -y).
BOXES = ((0.0, 0.0, 1.2, 0.9, 0.8), (1.4, 0.9, 0.7, 1.4, 0.7), (-1.3, 1.0, 0.9, 0.6, 1.1), (0.6, -1.3, 0.8, 0.5, 0.6))
FLOOR_HALF = 4.0
FOCAL_MM = 30.0
SENSOR_MM = 36.0


def cameras(num_views: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth extrinsics [N,3,4] (camera-from-world, OpenCV axes) and intrinsics [N,3,3] (photo px)."""
    rng = np.random.default_rng(7)
    ext = np.zeros((num_views, 3, 4))
    for i in range(num_views):
        a = np.deg2rad(-70.0 + 140.0 * i / max(num_views - 1, 1))
        centre = np.array([5.2 * np.sin(a), -2.6 - 0.4 * np.sin(3 * a), -5.2 * np.cos(a)])
        target = np.array([0.0, -0.3, 0.0]) + rng.uniform(-0.3, 0.3, 3)
        ext[i] = look_at(centre, target)
    return ext, np.repeat(photo_intrinsics(width, height)[None], num_views, axis=0)


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-from-world [3,4] at `centre` looking at `target`, image y along world +y (down), no roll."""
    z = np.asarray(target, dtype=np.float64) - centre
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)  # image x right with y (down) as the down direction
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])  # rows: camera axes in world
    return np.concatenate([rot, (-rot @ centre)[:, None]], axis=1)


def photo_intrinsics(width: int, height: int) -> np.ndarray:
    """K [3,3] of the rendering camera in photo pixels (horizontal sensor fit, centred principal point)."""
    f = FOCAL_MM / SENSOR_MM * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _ray_depth(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter t of the first hit (inf where none) for rays origin + t * dirs, dirs [P,3]."""
    best = np.full(len(dirs), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[1] / dirs[:, 1]
        hit = origin[None] + t[:, None] * dirs
        ok = (t > 0) & (np.abs(hit[:, 0]) <= FLOOR_HALF) & (np.abs(hit[:, 2]) <= FLOOR_HALF)
        best = np.where(ok, t, best)
        for cx, cz, sx, sy, sz in BOXES:
            lo = np.array([cx - sx / 2, -sy, cz - sz / 2])
            hi = np.array([cx + sx / 2, 0.0, cz + sz / 2])
            t0 = (lo[None] - origin[None]) / dirs
            t1 = (hi[None] - origin[None]) / dirs
            near = np.nanmax(np.minimum(t0, t1), axis=1)
            far = np.nanmin(np.maximum(t0, t1), axis=1)
            ok = (far >= near) & (near > 0)
            best = np.where(ok & (near < best), near, best)
    return best


def depth_maps(ext: np.ndarray, k_photo: np.ndarray, pixel_map: np.ndarray, model_hw: tuple[int, int]) -> np.ndarray:
    """Exact z-depth [N,H,W] at model pixel centres (mapped to photo pixels through pixel_map)."""
    h, w = model_hw
    out = np.zeros((len(ext), h, w), dtype=np.float64)
    v, u = np.mgrid[0:h, 0:w]
    for i in range(len(ext)):
        sx, sy, ox, oy = pixel_map[i]
        xp = sx * (u + 0.5) + ox
        yp = sy * (v + 0.5) + oy
        k = k_photo[i]
        rays_cam = np.stack([(xp - k[0, 2]) / k[0, 0], (yp - k[1, 2]) / k[1, 1], np.ones_like(xp)], -1).reshape(-1, 3)
        rot = ext[i, :, :3]
        centre = -rot.T @ ext[i, :, 3]
        t = _ray_depth(centre, rays_cam @ rot)  # world directions with camera z = 1, so t is z-depth
        out[i] = t.reshape(h, w)
    return out


def render(out_dir: Path, num_views: int = 10, width: int = 640, height: int = 480, samples: int = 8) -> Path:
    """Render (once: an existing truth.npz is reused) in a subprocess and return out_dir."""
    out_dir = Path(out_dir)
    if not (out_dir / "truth.npz").exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out_dir), str(num_views), str(width),
                        str(height), str(samples)], check=True, stdout=subprocess.DEVNULL)
    return out_dir


def render_path(out_dir: Path, extrinsics: np.ndarray, width: int, height: int, samples: int = 4) -> Path:
    """Render OUT_DIR/frame_0000.png... from the given extrinsics [N,3,4] in a subprocess (once: an existing
    truth.npz with the same cameras and size is reused) and return out_dir."""
    out_dir = Path(out_dir)
    ext = np.asarray(extrinsics, dtype=np.float64)
    truth = out_dir / "truth.npz"
    if truth.exists():
        with np.load(truth) as old:
            if old["extrinsics"].shape == ext.shape and np.array_equal(old["extrinsics"], ext) \
                    and np.array_equal(old["intrinsics"][0], photo_intrinsics(width, height)):
                return out_dir
        truth.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    cameras_file = out_dir / "cameras.npy"
    np.save(cameras_file, ext)
    subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out_dir), str(cameras_file), str(width),
                    str(height), str(samples)], check=True, stdout=subprocess.DEVNULL)
    return out_dir


def path_frame(out_dir: Path, index: int) -> Path:
    """The PNG `render_path` wrote for camera `index`."""
    return Path(out_dir) / f"frame_{index:04d}.png"


# ---------------------------------------------------------------------------------------- bpy side


def _texture_material(bpy, name: str, seed: int):
    """Emission of multi-scale procedural noise in object coordinates: detail at every scale, no lighting."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    coord = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Location"].default_value = (seed * 3.1, seed * 1.7, seed * 2.3)
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 6.0
    noise.inputs["Detail"].default_value = 12.0
    noise.inputs["Roughness"].default_value = 0.65
    vor = nodes.new("ShaderNodeTexVoronoi")
    vor.inputs["Scale"].default_value = 9.0
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.blend_type = "MULTIPLY"
    mix.inputs["Factor"].default_value = 0.6
    emit = nodes.new("ShaderNodeEmission")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(coord.outputs["Object"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
    links.new(mapping.outputs["Vector"], vor.inputs["Vector"])
    links.new(noise.outputs["Color"], mix.inputs["A"])
    links.new(vor.outputs["Color"], mix.inputs["B"])
    links.new(mix.outputs["Result"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat


def _to_blender(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[2]), float(-p[1]))  # OpenCV-like world -> Blender world (z up)


def _main(out_dir: Path, views: str, width: int, height: int, samples: int) -> None:
    """`views`: a number of views of `cameras()` (JPEG view_XX.jpg) or a .npy file of extrinsics (PNG
    frame_XXXX.png, see `render_path`)."""
    import bpy
    from mathutils import Matrix

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    if views.endswith(".npy"):
        ext = np.load(views)
        k = np.repeat(photo_intrinsics(width, height)[None], len(ext), axis=0)
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGB"
        name = lambda i: path_frame(out_dir, i)  # noqa: E731
    else:
        ext, k = cameras(int(views), width, height)
        scene.render.image_settings.file_format = "JPEG"
        scene.render.image_settings.quality = 95
        name = lambda i: out_dir / f"view_{i:02d}.jpg"  # noqa: E731
    scene.view_settings.view_transform = "Standard"
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2

    bpy.ops.mesh.primitive_plane_add(size=2 * FLOOR_HALF, location=(0, 0, 0))
    bpy.context.object.data.materials.append(_texture_material(bpy, "floor", 0))
    for j, (cx, cz, sx, sy, sz) in enumerate(BOXES):
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=_to_blender(np.array([cx, -sy / 2, cz])))
        obj = bpy.context.object
        obj.scale = (sx, sz, sy)
        obj.data.materials.append(_texture_material(bpy, f"box{j}", j + 1))

    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens = FOCAL_MM
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = SENSOR_MM
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    # Blender world = M @ this world; Blender camera axes = OpenCV camera axes with y, z flipped.
    world_to_blender = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    for i in range(len(ext)):
        rot = ext[i, :, :3]
        centre = -rot.T @ ext[i, :, 3]
        m = np.eye(4)
        m[:3, :3] = world_to_blender @ rot.T @ np.diag([1.0, -1.0, -1.0])
        m[:3, 3] = world_to_blender @ centre
        cam.matrix_world = Matrix(m.tolist())
        scene.render.filepath = str(name(i))
        bpy.ops.render.render(write_still=True)
    np.savez(out_dir / "truth.npz", extrinsics=ext, intrinsics=k)


if __name__ == "__main__":
    args = sys.argv[1:]
    _main(Path(args[0]), args[1], *(int(a) for a in args[2:5]))


# ------------------------------------------------------------------------------ reconstruction files


def perturb_cameras(ext: np.ndarray, k: np.ndarray, rot_deg: float = 2.0, pos_frac: float = 0.05,
                    focal_frac: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feed-forward-like errors: each camera turned by `rot_deg` about a random axis, its centre moved by
    `pos_frac` of its distance to the scene centre in a random direction, its focal scaled by 1 +- focal_frac."""
    rng = np.random.default_rng(seed)
    ext_p, k_p = ext.copy(), k.copy()
    for i in range(len(ext)):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        a = np.deg2rad(rot_deg)
        kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        turn = np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx
        rot = ext[i, :, :3]
        centre = -rot.T @ ext[i, :, 3]
        move = rng.normal(size=3)
        centre = centre + pos_frac * np.linalg.norm(centre) * move / np.linalg.norm(move)
        rot_p = turn @ rot
        ext_p[i, :, :3] = rot_p
        ext_p[i, :, 3] = -rot_p @ centre
        sign = 1.0 if rng.random() < 0.5 else -1.0
        k_p[i, 0, 0] *= 1 + sign * focal_frac
        k_p[i, 1, 1] *= 1 + sign * focal_frac
    return ext_p, k_p


def scene_reconstruction(scene_dir: Path, ext: np.ndarray, k_photo: np.ndarray, model_hw: tuple[int, int] = (120, 160),
                         views: list[int] | None = None):
    """A reconstruction file's content for the rendered photos `views` (default: the first len(ext)): exact
    depth (from the true cameras) stored with the cameras given (`ext`, `k_photo`, e.g. perturbed)."""
    from PIL import Image

    from vggt_blender.io.reconstruction import make_provenance, make_reconstruction

    truth = np.load(Path(scene_dir) / "truth.npz")
    views = list(range(len(ext))) if views is None else list(views)
    paths = [str(Path(scene_dir) / f"view_{i:02d}.jpg") for i in views]
    w, h = Image.open(paths[0]).size
    mh, mw = model_hw
    pixel_map = np.tile(np.array([w / mw, h / mh, 0.0, 0.0]), (len(ext), 1))
    depth = depth_maps(truth["extrinsics"][views], truth["intrinsics"][views], pixel_map, model_hw)
    conf = np.where(np.isfinite(depth), 5.0, 1.0)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    colors = np.stack([np.asarray(Image.open(p).convert("RGB").resize((mw, mh))) for p in paths])
    a_inv = np.linalg.inv(np.array([[w / mw, 0, 0], [0, h / mh, 0], [0, 0, 1.0]]))
    return make_reconstruction(
        depth, ext, a_inv @ k_photo, colors=colors, depth_conf=conf, image_paths=paths, pixel_map=pixel_map,
        original_sizes=np.tile(np.array([w, h]), (len(ext), 1)),
        provenance=make_provenance(checkpoint="ground truth", mode="test"))


def camera_errors(ext_est: np.ndarray, k_est: np.ndarray, ext_true: np.ndarray, k_true: np.ndarray) -> dict:
    """Errors after the similarity that best aligns the estimated camera centres with the true ones:
    rotation (degrees), position (% of the mean camera distance from the centres' centroid), focal (%)."""
    def centres(e: np.ndarray) -> np.ndarray:
        return np.einsum("nji,nj->ni", e[:, :, :3], -e[:, :, 3])

    c_est, c_true = centres(ext_est), centres(ext_true)
    mu_e, mu_t = c_est.mean(0), c_true.mean(0)
    a, b = c_est - mu_e, c_true - mu_t
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt  # true ~ scale * rot @ est + shift
    scale = np.trace(np.diag(s) @ d) / np.sum(a * a)
    aligned = scale * a @ rot.T + mu_t
    rot_err = []
    for i in range(len(ext_est)):
        r_est_in_true = ext_est[i, :, :3] @ rot.T
        cos = (np.trace(r_est_in_true @ ext_true[i, :, :3].T) - 1.0) / 2.0
        rot_err.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    spread = np.mean(np.linalg.norm(b, axis=1))
    pos_err = 100.0 * np.linalg.norm(aligned - c_true, axis=1) / spread
    f_est = 0.5 * (k_est[:, 0, 0] + k_est[:, 1, 1])
    f_true = 0.5 * (k_true[:, 0, 0] + k_true[:, 1, 1])
    focal_err = 100.0 * np.abs(f_est - f_true) / f_true
    return {"rotation_deg": np.array(rot_err), "position_pct": pos_err, "focal_pct": focal_err}

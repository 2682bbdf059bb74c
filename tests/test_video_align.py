"""Long shots: chunk planning and the Sim(3) chunk alignment on synthetic shots with known ground truth.

A camera flies through a box room; each chunk's "reconstruction" is the ground truth in that chunk's own
gauge (world = its first camera, a random scale), with independent pose and depth noise, as a model pass
gives it. The assembled path is compared with the ground truth and with a single pass over the whole shot.
"""

from __future__ import annotations

import numpy as np
import pytest

from vggt_blender.geometry.cameras import depth_to_world_points
from vggt_blender.shot.align import ShotAssembler, Sim3, camera_centres, rotation_angle_deg, umeyama
from vggt_blender.shot.chunks import choose_chunk_size, frames_per_pass, plan_chunks

W, H = 40, 30
K = np.array([[36.0, 0, W / 2], [0, 36.0, H / 2], [0, 0, 1]])
ROOM = np.array([[-6.0, -3.0, -6.0], [6.0, 3.0, 8.0]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _skew_rot(v):
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def ground_truth(count: int):
    """Camera-from-world extrinsics along a curving dolly, and each view's depth inside the room."""
    t = np.linspace(0, 1, count)
    centres = np.stack([4 * np.sin(2.0 * t) - 2, 0.5 * np.sin(6 * t), 6 * t - 3], axis=1)
    E = np.zeros((count, 3, 4))
    depth = np.zeros((count, H, W))
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    for i in range(count):
        R_wc = _rot_y(0.9 * np.sin(3 * t[i]) + 0.4 * t[i]) @ _rot_x(0.15 * np.cos(5 * t[i]))  # world-from-camera
        R = R_wc.T
        E[i, :, :3], E[i, :, 3] = R, -R @ centres[i]
        rays = rays_cam @ R_wc.T  # z_cam = 1 rays in world
        with np.errstate(divide="ignore", invalid="ignore"):
            hits = np.stack([np.where(rays > 0, (ROOM[1] - centres[i]) / rays, (ROOM[0] - centres[i]) / rays)],
                            0)[0]
        depth[i] = np.nanmin(np.where(hits > 0, hits, np.inf), axis=-1)  # the wall hit first; z_cam = 1 rays
    return E, depth


def to_gauge(E, depth, first: int, scale: float):
    """The views in the gauge a pass starting at `first` reports: world = camera `first`, units * scale."""
    g = Sim3(scale, E[first, :, :3], scale * E[first, :, 3])  # x_gauge = s (R0 x + t0)
    return g.apply_extrinsics(E), depth * scale


def noisy(E, depth, rng, rot_deg, trans, depth_rel):
    E = E.copy()
    for i in range(len(E)):
        dR = _skew_rot(np.radians(rot_deg) * rng.standard_normal(3))
        C = camera_centres(E[i]) + trans * rng.standard_normal(3)
        R = dR @ E[i, :, :3]
        E[i, :, :3], E[i, :, 3] = R, -R @ C
    return E, depth * (1 + depth_rel * rng.standard_normal(depth.shape))


def assemble(E_gt, depth_gt, chunks, rng, noise):
    shot = ShotAssembler(len(E_gt), H, W)
    scales = []
    for index, chunk in enumerate(chunks):
        scale = float(np.exp(rng.uniform(-1, 1)))  # every pass has its own scale
        scales.append(scale)
        E_c, d_c = to_gauge(E_gt[chunk.start:chunk.end], depth_gt[chunk.start:chunk.end], 0, scale)
        E_c, d_c = noisy(E_c, d_c, rng, *noise)
        conf = np.full(d_c.shape, 2.0, dtype=np.float32)
        shot.add(index, chunk.start, chunk.overlap, E_c, np.repeat(K[None], chunk.size, 0), d_c, conf)
    return shot, scales[0]


def path_errors(shot, E_gt, depth_gt, scale0):
    """Centre error relative to the path length, and rotation error (deg), in chunk 0's gauge."""
    E_ref, _ = to_gauge(E_gt, depth_gt, 0, scale0)
    c_ref, c_got = camera_centres(E_ref), camera_centres(shot.extrinsics)
    length = np.sum(np.linalg.norm(np.diff(c_ref, axis=0), axis=1))
    centre = np.linalg.norm(c_got - c_ref, axis=1) / length
    rot = rotation_angle_deg(E_ref[:, :, :3], shot.extrinsics[:, :, :3])
    return centre, rot


NOISE = (0.2, 0.004, 0.005)  # per-view rotation (deg), centre (gauge units), relative depth noise


def test_chunked_path_follows_ground_truth_and_a_single_pass():
    E_gt, depth_gt = ground_truth(300)
    rng = np.random.default_rng(1)
    chunks = plan_chunks(300, 60, 12)
    assert len(chunks) == 6
    shot, scale0 = assemble(E_gt, depth_gt, chunks, rng, NOISE)
    centre, rot = path_errors(shot, E_gt, depth_gt, scale0)
    single, s_single = assemble(E_gt, depth_gt, plan_chunks(300, 300), np.random.default_rng(1), NOISE)
    centre1, rot1 = path_errors(single, E_gt, depth_gt, s_single)
    print(f"\nchunked 6x60/12: centre drift max {centre.max():.2e} (end {centre[-1]:.2e}) of the path length, "
          f"rotation max {rot.max():.3f} deg; single pass: {centre1.max():.2e}, {rot1.max():.3f} deg")
    for r in shot.reports:
        print("  ", r.to_dict())
    assert centre.max() < 1e-2 and rot.max() < 1.5
    assert centre1.max() < 2e-3
    # Every chunk's own scale (e^-1..e^1) was recovered: depth is continuous across chunk borders.
    d = np.array([np.median(shot.depth[i] / depth_gt[i]) for i in range(300)]) / scale0
    assert np.abs(d - 1).max() < 0.02
    for r in shot.reports:
        assert r.relative_point_rms < 0.03 and r.rotation_max_deg < 1.0
        assert r.scale == pytest.approx(r.depth_ratio_scale, rel=0.02)
    # The aligned cameras and scaled depth put a view's pixels where the ground truth has them (chunk 0's
    # gauge): the world points the file derives from them do not drift at chunk borders.
    E_ref, d_ref = to_gauge(E_gt, depth_gt, 0, scale0)
    got = depth_to_world_points(shot.depth, shot.extrinsics, shot.intrinsics_model, dtype=np.float64)
    want = depth_to_world_points(d_ref.astype(np.float32), E_ref, shot.intrinsics_model, dtype=np.float64)
    assert np.median(np.linalg.norm(got - want, axis=-1)) < 0.02 * np.median(d_ref)


def test_without_alignment_the_chunks_fall_apart():
    """The check above can fail: chaining the chunks' own gauges leaves centre errors of the path's size."""
    E_gt, depth_gt = ground_truth(120)
    chunks = plan_chunks(120, 40, 10)
    shot = ShotAssembler(120, H, W)
    rng = np.random.default_rng(2)
    for index, chunk in enumerate(chunks):
        E_c, d_c = to_gauge(E_gt[chunk.start:chunk.end], depth_gt[chunk.start:chunk.end], 0,
                            float(np.exp(rng.uniform(-1, 1))))
        shot.extrinsics[chunk.start:chunk.end] = E_c  # no Sim(3)
    centre, _ = path_errors(shot, E_gt, depth_gt, 1.0)
    assert centre.max() > 0.05


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    truth = Sim3(2.5, _skew_rot(np.array([0.3, -1.2, 0.7])), np.array([1.0, -2.0, 0.5]))
    got = umeyama(src, truth.apply(src))
    assert got.scale == pytest.approx(2.5, rel=1e-12)
    assert np.allclose(got.rotation, truth.rotation, atol=1e-12)
    assert np.allclose(got.translation, truth.translation, atol=1e-12)
    both = truth.compose(truth.inverse())
    assert both.scale == pytest.approx(1.0) and np.allclose(both.rotation, np.eye(3))
    # Extrinsics follow the points: a camera sees the transformed point where it saw the original.
    E = np.concatenate([_skew_rot(np.array([0.1, 0.2, 0.3])), np.array([[0.5], [0.1], [2.0]])], axis=1)
    x = np.array([0.3, -0.2, 4.0])
    cam = E[:, :3] @ x + E[:, 3]
    E2 = truth.apply_extrinsics(E)
    cam2 = E2[:, :3] @ truth.apply(x) + E2[:, 3]
    assert np.allclose(cam2, truth.scale * cam)


def test_plan_chunks_covers_every_view_with_the_overlap():
    assert [(c.start, c.end, c.overlap) for c in plan_chunks(50, 120)] == [(0, 50, 0)]
    chunks = plan_chunks(300, 120, 20)
    assert [(c.start, c.end, c.overlap) for c in chunks] == [(0, 120, 0), (100, 220, 20), (180, 300, 40)]
    for n, size, overlap in [(601, 24, 4), (61, 32, 10), (33, 32, 10), (1000, 120, 20)]:
        chunks = plan_chunks(n, size, overlap)
        assert chunks[0].start == 0 and chunks[-1].end == n
        assert all(c.size == size for c in chunks)
        for a, b in zip(chunks, chunks[1:]):
            assert b.overlap == a.end - b.start >= overlap and b.start > a.start


def test_chunk_size_comes_from_free_memory():
    gib = 1024 ** 3
    assert frames_per_pass(80 * gib, 0.125 * gib, 5 * gib, safety=0.8) == 472
    assert choose_chunk_size(300, 80 * gib, 0.125 * gib, 5 * gib, safety=0.8) == 300  # fits in one pass
    assert choose_chunk_size(2000, 80 * gib, 0.125 * gib, 5 * gib, safety=0.8) == 472
    assert choose_chunk_size(2000, 20 * gib, 0.125 * gib, 5 * gib, safety=0.8) == 88
    assert choose_chunk_size(2000, 1 * gib, 0.125 * gib, 0, overlap=20) == 24  # never below the overlap
    assert choose_chunk_size(2000, 80 * gib, 0.125 * gib, cap=32) == 32


def test_spooled_shot_matches_the_in_memory_one_and_writes_the_same_file(tmp_path):
    from vggt_blender.io.reconstruction import load_reconstruction, make_reconstruction, save_reconstruction
    from vggt_blender.io.shot_fields import shot_extra
    from vggt_blender.io.spool import save_reconstruction_streamed

    E_gt, depth_gt = ground_truth(40)
    chunks = plan_chunks(40, 16, 4)
    results = []
    for spool in (False, True):
        rng = np.random.default_rng(5)
        shot = ShotAssembler(40, H, W, spool=spool)
        for index, chunk in enumerate(chunks):
            E_c, d_c = to_gauge(E_gt[chunk.start:chunk.end], depth_gt[chunk.start:chunk.end], 0, 1.5)
            E_c, d_c = noisy(E_c, d_c, rng, *NOISE)
            k = np.repeat(K[None], chunk.size, 0)
            pts = depth_to_world_points(d_c.astype(np.float32), E_c, k, dtype=np.float32)
            shot.add(index, chunk.start, chunk.overlap, E_c, k, d_c, np.full(d_c.shape, 2.0), pts * 2.0,
                     np.ones(d_c.shape))
        results.append(shot)
    memory, spooled = results
    assert set(spooled.spools) == {"point_map"}  # the one stored xyz primary; world points are derived
    mapped = spooled.point_map_array()
    assert isinstance(mapped, np.memmap) and np.array_equal(memory.point_map_array(), mapped)
    assert np.array_equal(memory.extrinsics, spooled.extrinsics)

    rec = make_reconstruction(spooled.depth, spooled.extrinsics, spooled.intrinsics_model, point_map=mapped)
    rec.extra = shot_extra(range(40), 24, 1, "/v.mp4", "video", (W, H), 40)
    save_reconstruction_streamed(tmp_path / "streamed.npz", rec, compress=True)
    save_reconstruction(tmp_path / "routed.npz", rec)  # a shot: save_reconstruction streams it as well
    photo = make_reconstruction(spooled.depth, spooled.extrinsics, spooled.intrinsics_model,
                                point_map=np.array(mapped))
    save_reconstruction(tmp_path / "plain.npz", photo)  # np.savez of the whole arrays
    plain = load_reconstruction(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as z:
        stored_plain = {name: z[name] for name in ("world_points", "valid_mask", "intrinsics")}
    for file in ("streamed.npz", "routed.npz"):
        with np.load(tmp_path / file) as z:
            for name, want in stored_plain.items():  # the derived arrays as written block by block
                assert np.array_equal(z[name], want), (file, name)
        a = load_reconstruction(tmp_path / file)
        for name in ("world_points", "point_map", "depth", "extrinsics", "colors", "valid_mask"):
            assert np.array_equal(getattr(a, name), getattr(plain, name)), name
        assert a.extra["frame_numbers"].tolist() == list(range(40)) and a.provenance == plain.provenance
    for s in spooled.spools.values():
        s.close()

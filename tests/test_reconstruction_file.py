"""The .npz reconstruction file: round trip, schema checks, atomic writes, damaged files, summary."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vggt_blender.io import reconstruction as recfile
from vggt_blender.errors import ReconstructionFileError, VGGTError
from vggt_blender.io.reconstruction import (
    FIELDS,
    PRIMARY_FIELDS,
    SCHEMA,
    Reconstruction,
    load_reconstruction,
    make_provenance,
    make_reconstruction,
    save_reconstruction,
)
from vggt_blender.io.summary import summarize
from tests.helpers import synthetic_reconstruction


@pytest.fixture()
def rec() -> Reconstruction:
    return synthetic_reconstruction(num_images=3, height=14, width=28, seed=1)


def _rewrite(src: Path, dst: Path, drop: tuple[str, ...] = (), **replace: np.ndarray) -> Path:
    """Copy a saved file with some entries removed or replaced (for damaged-schema cases)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(replace)
    np.savez(dst, **arrays)
    return dst


def test_round_trip_is_exact(tmp_path: Path, rec: Reconstruction) -> None:
    rec.extra["track_points"] = np.arange(6, dtype=np.float32).reshape(3, 2)
    path = save_reconstruction(tmp_path / "scene.npz", rec)
    back = load_reconstruction(path)
    for name in FIELDS:
        a, b = getattr(rec, name), getattr(back, name)
        if isinstance(a, list):
            assert a == b and all(type(s) is str for s in b)
        else:
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    assert back.provenance_dict == rec.provenance_dict
    assert back.provenance_dict["checkpoint"] == "synthetic"
    np.testing.assert_array_equal(back.extra["track_points"], rec.extra["track_points"])
    assert back.num_images == 3 and back.model_hw == (14, 28)
    # only the final file is left in the folder
    assert [p.name for p in tmp_path.iterdir()] == ["scene.npz"]


def test_file_layout_matches_schema_table(tmp_path: Path, rec: Reconstruction) -> None:
    path = save_reconstruction(tmp_path / "scene.npz", rec)
    with np.load(path, allow_pickle=False) as z:
        assert z["schema"].dtype.kind == "U" and z["schema"].shape == () and str(z["schema"]) == SCHEMA
        assert z["schema_version"].dtype == np.int64 and int(z["schema_version"]) == 1
        assert json.loads(str(z["provenance"]))["mode"] == "crop"
        expected = {
            "image_paths": ("U", (3,)), "original_sizes": ("int32", (3, 2)), "model_size": ("int32", (2,)),
            "pixel_map": ("float64", (3, 4)), "valid_box": ("int32", (3, 4)),
            "extrinsics": ("float64", (3, 3, 4)), "intrinsics": ("float64", (3, 3, 3)),
            "depth": ("float32", (3, 14, 28)), "world_points": ("float32", (3, 14, 28, 3)),
            "colors": ("uint8", (3, 14, 28, 3)), "valid_mask": ("bool", (3, 14, 28)),
        }
        for key, (dtype, shape) in expected.items():
            arr = z[key]
            assert (arr.dtype.kind == "U" if dtype == "U" else arr.dtype == np.dtype(dtype)), key
            assert arr.shape == shape, key
        np.testing.assert_array_equal(z["model_size"], [28, 14])


def test_make_reconstruction_derives_consistent_arrays() -> None:
    n, h, w = 2, 6, 10
    depth = np.full((n, h, w), 3.0, dtype=np.float32)
    ext = np.zeros((n, 3, 4))
    ext[:, :, :3] = np.eye(3)
    ext[1, :, 3] = [0.5, -0.25, 1.0]
    k = np.array([[8.0, 0, w / 2], [0, 9.0, h / 2], [0, 0, 1]])
    pixel_map = np.array([[2.0, 2.0, 0.0, -4.0], [1.5, 1.5, 3.0, 0.0]])
    box = np.array([[0, 2, 10, 6], [1, 0, 9, 6]])
    rec = make_reconstruction(depth, ext, np.stack([k, k]), pixel_map=pixel_map, valid_box=box,
                              image_paths=["/a/IMG_1.JPG", "/a/IMG_2.png"])
    assert rec.image_names == ["IMG_1", "IMG_2"] and rec.display_paths == rec.image_paths
    # K_photo = A @ K_model
    np.testing.assert_allclose(rec.intrinsics[0], [[16.0, 0, 10], [0, 18, 6 - 4], [0, 0, 1]])
    np.testing.assert_allclose(rec.intrinsics[1], [[12.0, 0, 7.5 + 3], [0, 13.5, 4.5], [0, 0, 1]])
    assert rec.valid_mask[0].sum() == 4 * 10 and not rec.valid_mask[0, :2].any()
    assert rec.valid_mask[1].sum() == 6 * 8 and not rec.valid_mask[1, :, 0].any()
    # rays through pixel centres: pixel (u=0, v=0) of camera 0 at depth 3
    np.testing.assert_allclose(rec.world_points[0, 0, 0], [(0.5 - 5) / 8 * 3, (0.5 - 3) / 9 * 3, 3.0], rtol=1e-6)
    # camera 1: x_world = x_cam - t
    np.testing.assert_allclose(rec.world_points[1, 3, 5], [0.5 / 8 * 3 - 0.5, 0.5 / 9 * 3 + 0.25, 3 - 1.0],
                               atol=1e-6)
    np.testing.assert_array_equal(rec.point_map, rec.world_points)
    rec.validate()


def test_synthetic_points_reproject_onto_their_pixel_centres(rec: Reconstruction) -> None:
    i = 2
    pts = rec.world_points[i].reshape(-1, 3).astype(np.float64)
    cam = pts @ rec.extrinsics[i, :, :3].T + rec.extrinsics[i, :, 3]
    uvw = cam @ rec.intrinsics_model[i].T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    vv, uu = np.mgrid[0:14, 0:28]
    np.testing.assert_allclose(u, uu.ravel() + 0.5, atol=1e-4)
    np.testing.assert_allclose(v, vv.ravel() + 0.5, atol=1e-4)
    np.testing.assert_allclose(cam[:, 2], rec.depth[i].ravel(), rtol=1e-5)


def _project(points: np.ndarray, ext: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = points.reshape(-1, 3).astype(np.float64) @ ext[:, :3].T + ext[:, 3]
    uvw = cam @ k.T
    return np.stack([uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]], -1), cam[:, 2]


def test_refined_cameras_move_the_points_and_photo_intrinsics(rec: Reconstruction) -> None:
    before = rec.world_points.copy()
    # A "refinement": camera 1 moves 0.3 along x and its focal length grows by 10 %.
    ext = rec.extrinsics.copy()
    ext[1, 0, 3] += 0.3
    k = rec.intrinsics_model.copy()
    k[1, :2, :2] *= 1.1
    rec.extrinsics, rec.intrinsics_model = ext, k
    np.testing.assert_array_equal(rec.world_points[[0, 2]], before[[0, 2]])
    assert np.abs(rec.world_points[1] - before[1]).max() > 0.1
    uv, z = _project(rec.world_points[1], ext[1], k[1])
    vv, uu = np.mgrid[0:14, 0:28]
    np.testing.assert_allclose(uv, np.stack([uu.ravel() + 0.5, vv.ravel() + 0.5], -1), atol=1e-4)
    np.testing.assert_allclose(z, rec.depth[1].ravel(), rtol=1e-5)
    np.testing.assert_allclose(rec.intrinsics[1, 0, 0], 1.1 * 0.9 * 28, rtol=1e-12)  # pixel map is identity


def test_primaries_cannot_be_edited_in_place(rec: Reconstruction) -> None:
    for name in ("depth", "extrinsics", "intrinsics_model", "pixel_map", "valid_box"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(rec, name)[0] += 1
    with pytest.raises(ValueError, match="read-only"):
        rec.world_points[0] = 0.0
    with pytest.raises(AttributeError):
        rec.world_points = np.zeros_like(rec.world_points)


def test_caller_arrays_stay_writable() -> None:
    depth = np.full((1, 4, 6), 2.0, dtype=np.float32)
    make_reconstruction(depth, np.eye(3, 4)[None], np.array([[[5.0, 0, 3], [0, 5, 2], [0, 0, 1]]]))
    depth[0, 0, 0] = 1.0  # the Reconstruction holds a read-only view, not the caller's array


def test_load_recomputes_derived_arrays_instead_of_trusting_them(tmp_path: Path, rec: Reconstruction) -> None:
    good = save_reconstruction(tmp_path / "good.npz", rec)
    with np.load(good) as z:
        stored = {k: z[k] for k in ("world_points", "intrinsics", "valid_mask")}
    np.testing.assert_array_equal(stored["world_points"], rec.world_points)  # written for older readers
    # Stale derived entries (as a tool that refined the cameras but not the points would leave them).
    stale = _rewrite(good, tmp_path / "stale.npz", world_points=stored["world_points"] + 1.0,
                     intrinsics=stored["intrinsics"] * 2.0, valid_mask=np.zeros_like(stored["valid_mask"]))
    loaded = load_reconstruction(stale)
    np.testing.assert_array_equal(loaded.world_points, rec.world_points)
    np.testing.assert_array_equal(loaded.intrinsics, rec.intrinsics)
    assert loaded.valid_mask.all()
    # Their dtype and shape are still schema-checked.
    bad = _rewrite(good, tmp_path / "bad.npz", world_points=stored["world_points"][..., :2])
    with pytest.raises(ReconstructionFileError, match="'world_points' has shape"):
        load_reconstruction(bad)


def test_other_schema_version_is_refused_with_both_versions(tmp_path: Path, rec: Reconstruction) -> None:
    good = save_reconstruction(tmp_path / "good.npz", rec)
    bad = _rewrite(good, tmp_path / "v2.npz", schema_version=np.array(2, dtype=np.int64))
    with pytest.raises(ReconstructionFileError) as info:
        load_reconstruction(bad)
    msg = str(info.value)
    assert "v2.npz" in msg and "schema version 2" in msg and "version 1" in msg and "newer" in msg
    assert info.value.file == str(bad) and isinstance(info.value, VGGTError)


@pytest.mark.parametrize(
    "drop, replace, expect",
    [
        (("depth_conf",), {}, "missing 1 required entry: depth_conf"),
        (("schema",), {}, "no 'schema' entry"),
        ((), {"schema": np.array("something.else")}, "schema is 'something.else'"),
        ((), {"colors": np.zeros((3, 14, 28, 3), np.float32)}, "'colors' has dtype float32, expected uint8"),
        ((), {"depth": np.zeros((2, 14, 28), np.float32)}, "'depth' has shape [2, 14, 28], expected [N,H,W]"),
        ((), {"valid_mask": np.zeros((3, 14, 27), bool)}, "'valid_mask' has shape [3, 14, 27]"),
        ((), {"model_size": np.array([14, 28], np.int32)}, "'model_size' says 14x28"),
        ((), {"provenance": np.array("{not json")}, "'provenance' is not valid JSON"),
        ((), {"image_paths": np.array([1.0, 2.0, 3.0])}, "'image_paths' has dtype float64"),
    ],
)
def test_schema_problems_are_named(tmp_path: Path, rec: Reconstruction, drop, replace, expect) -> None:
    good = save_reconstruction(tmp_path / "good.npz", rec)
    bad = _rewrite(good, tmp_path / "bad.npz", drop=drop, **replace)
    with pytest.raises(ReconstructionFileError) as info:
        load_reconstruction(bad)
    assert expect in str(info.value)
    assert str(bad) in str(info.value)


def test_truncated_file_is_reported(tmp_path: Path, rec: Reconstruction) -> None:
    good = save_reconstruction(tmp_path / "good.npz", rec)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ReconstructionFileError, match=r"cut\d+\.npz: (not a reconstruction|damaged)"):
            load_reconstruction(bad)


def test_corrupted_member_is_reported(tmp_path: Path, rec: Reconstruction) -> None:
    good = save_reconstruction(tmp_path / "good.npz", rec)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("depth.npy")
    # flip bytes in the middle of the depth member's data: the zip CRC no longer matches
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start:start + 16] = bytes(16)
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ReconstructionFileError, match="flipped.npz: damaged file"):
        load_reconstruction(bad)


def test_foreign_files_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pkl = tmp_path / "evil.npz"
    pkl.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ReconstructionFileError, match="evil.npz: not a reconstruction file"):
        load_reconstruction(pkl)
    obj_npz = tmp_path / "objects.npz"
    np.savez(obj_npz, schema=np.array([Evil()], dtype=object))
    with pytest.raises(ReconstructionFileError, match="objects.npz"):
        load_reconstruction(obj_npz)
    assert not marker.exists()

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ReconstructionFileError, match="garbage.npz: not a reconstruction file"):
        load_reconstruction(garbage)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ReconstructionFileError, match="single .npy array"):
        load_reconstruction(npy)
    with pytest.raises(ReconstructionFileError, match="missing.npz: file not found"):
        load_reconstruction(tmp_path / "missing.npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ReconstructionFileError, match="empty.npz"):
        load_reconstruction(empty)


def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path, rec: Reconstruction, monkeypatch) -> None:
    target = tmp_path / "scene.npz"
    save_reconstruction(target, rec)
    before = target.read_bytes()

    real_write = np.lib.format.write_array
    calls = []

    def crash_halfway(*args, **kwargs):
        calls.append(1)
        if len(calls) % 4 == 0:
            raise KeyboardInterrupt  # e.g. the user cancels during the write, some members written
        real_write(*args, **kwargs)

    monkeypatch.setattr(recfile.np.lib.format, "write_array", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_reconstruction(target, synthetic_reconstruction(num_images=1, height=14, width=14))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scene.npz"]

    fresh = tmp_path / "new.npz"
    with pytest.raises(KeyboardInterrupt):
        save_reconstruction(fresh, rec)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.npz"]


def test_invalid_reconstruction_is_not_written(tmp_path: Path, rec: Reconstruction) -> None:
    rec.depth = rec.depth[:, :, :-1]
    with pytest.raises(ReconstructionFileError, match="out.npz: 'depth_conf' has shape"):
        save_reconstruction(tmp_path / "out.npz", rec)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ReconstructionFileError, match="cannot write in folder"):
        save_reconstruction(tmp_path / "no_such_dir" / "out.npz", synthetic_reconstruction(1, 14, 14))


def test_constructor_coerces_lossless_dtypes(rec: Reconstruction) -> None:
    r = Reconstruction(**{**{k: getattr(rec, k) for k in PRIMARY_FIELDS}, "depth": rec.depth.astype(np.float64),
                          "original_sizes": rec.original_sizes.astype(np.int64),
                          "image_paths": [Path(p) for p in rec.image_paths],
                          "provenance": {"checkpoint": "x"}})
    assert r.depth.dtype == np.float32 and r.original_sizes.dtype == np.int32
    assert r.image_paths == rec.image_paths and r.provenance_dict == {"checkpoint": "x"}
    r.validate()


def test_summary_reports_numbers(rec: Reconstruction) -> None:
    rec.provenance = json.dumps(make_provenance(
        checkpoint="vggt-1b", checkpoint_sha256="ab" * 32, mode="pad", precision="bf16", device="cuda:0",
        timings={"loading": 3.25, "inference": 1.5}))
    depth = np.full_like(rec.depth, 2.0)
    depth[0, 0, 0], depth[2, 5, 5] = 0.5, 7.0
    rec.depth = depth  # the primaries are read-only: a new depth is assigned, never edited in place
    rec.depth_conf[:] = np.linspace(1, 11, rec.depth_conf.size, dtype=np.float32).reshape(rec.depth.shape)
    text = summarize(rec)
    assert "3 images, model input 28x14" in text
    assert "[0] synthetic_00  28x14  /photos/synthetic_00.jpg" in text
    assert "checkpoint: vggt-1b (sha256 abababababab...)" in text
    assert "device: cuda:0, precision: bf16, mode: pad" in text
    assert "timings: loading 3.25 s, inference 1.50 s" in text
    assert "depth: min 0.5, median 2, max 7" in text
    assert "depth confidence: p10 2, p50 6, p90 10, max 11" in text
    assert "valid pixels: 1,176 of 1,176" in text
    assert "created: 20" in text


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path, rec: Reconstruction) -> None:
    import os

    from vggt_blender.io.ply import export_ply

    old = os.umask(0o022)
    try:
        save_reconstruction(tmp_path / "scene.npz", rec)
        export_ply(rec, tmp_path / "points.ply")
    finally:
        os.umask(old)
    for name in ("scene.npz", "points.ply"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    import tracemalloc
    import zipfile

    rec = synthetic_reconstruction(num_images=2, height=14, width=14)
    path = tmp_path / "bomb.npz"
    save_reconstruction(path, rec)
    # Replace world_points by 400 MB of zeros that compress to about 400 kB.
    huge = np.zeros((2, 14, 14, 255_000), dtype=np.float32)
    bomb = tmp_path / "bomb2.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "world_points.npy":
                with dst.open("world_points.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, huge)
            else:
                dst.writestr(info.filename, src.read(info))
    del huge
    assert bomb.stat().st_size < 5_000_000
    tracemalloc.start()
    with pytest.raises(ReconstructionFileError, match="bomb2.npz: 'world_points' would inflate to 399,840,000 bytes"):
        load_reconstruction(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000


def test_oversized_extra_entries_are_refused(tmp_path: Path) -> None:
    rec = synthetic_reconstruction(num_images=1, height=14, width=14)
    rec.extra["blob"] = np.zeros(20_000_000, dtype=np.float32)  # 80 MB of extras on a 14x14 reconstruction
    path = tmp_path / "fat.npz"
    save_reconstruction(path, rec, compress=True)
    with pytest.raises(ReconstructionFileError, match="fat.npz: its extra entries \\(blob\\) would inflate"):
        load_reconstruction(path)


@pytest.mark.parametrize("key", ["extrinsics", "intrinsics_model", "depth"])
def test_nan_cameras_or_depth_are_refused(tmp_path: Path, key: str) -> None:
    rec = synthetic_reconstruction(num_images=3, height=14, width=14)
    broken = getattr(rec, key).copy()
    broken[1].flat[0] = np.nan
    setattr(rec, key, broken)
    path = tmp_path / "nan.npz"
    save_reconstruction(path, rec)
    with pytest.raises(ReconstructionFileError, match=f"nan.npz: '{key}' holds NaN or infinite values \\(view 1\\)"):
        load_reconstruction(path)


def test_a_pipe_is_refused_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "scene.npz"
    os.mkfifo(fifo)
    with pytest.raises(ReconstructionFileError, match="scene.npz: is not a regular file"):
        load_reconstruction(fifo)


def test_export_with_nothing_above_the_threshold_is_an_error(tmp_path: Path) -> None:
    from vggt_blender.errors import RequestError
    from vggt_blender.io.ply import export_ply

    rec = synthetic_reconstruction(num_images=2, height=14, width=14)
    top = float(rec.depth_conf[rec.valid_mask].max())
    with pytest.raises(RequestError, match=f"no point has confidence >= {top + 1:g}"):
        export_ply(rec, tmp_path / "p.ply", min_confidence=top + 1)
    assert not (tmp_path / "p.ply").exists()

"""The inference pipeline end to end with a tiny VGGT: numbers consistent across the stored arrays.

The helpers at the top (tiny checkpoint, textured photos) are also used by test_cli.py and test_worker.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_blender import inference
from vggt_blender.devices import choose_device, choose_precision, describe_device
from vggt_blender.errors import CancelledError, OutOfMemoryError, RequestError
from vggt_blender.reconstruction import load_reconstruction

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CONFIG = FIXTURES / "parity" / "tiny" / "config.json"
ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


def tiny_model() -> torch.nn.Module:
    from vggt_blender.model import VGGT, VGGTConfig

    torch.manual_seed(0)
    model = VGGT(VGGTConfig.load(TINY_CONFIG)).eval()
    # Random weights predict any field of view (0 after the ReLU, or beyond pi): pin both FoV outputs to
    # 1 radian (4 refinement iterations each add 0.25) so the cameras are usable.
    with torch.no_grad():
        model.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        model.camera_head.pose_branch.fc2.bias[7:9] = 0.25
    return model


def write_tiny_checkpoint(folder: Path) -> Path:
    path = folder / "model.pt"
    torch.save(tiny_model().state_dict(), path)
    return path


def photo_pixels(width: int, height: int, shift: int) -> np.ndarray:
    """Smooth, position-coded colours (R from x, G from y) plus a little texture that moves with `shift`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 20 + 200 * (xx + 0.5) / width
    green = 20 + 200 * (yy + 0.5) / height
    blue = 128 + 60 * np.sin((xx + shift) / 5.0) * np.cos(yy / 7.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).round().astype(np.uint8)


def write_photos(folder: Path, count: int = 3, size: tuple[int, int] = (160, 120)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"view_{index}.png"
        Image.fromarray(photo_pixels(size[0], size[1], 6 * index)).save(path)
        paths.append(path)
    return paths


def unproject(depth: np.ndarray, extrinsics: np.ndarray, k_model: np.ndarray) -> np.ndarray:
    """Independent reference: rays through pixel centres, camera -> world with the inverted [R|t]."""
    n, h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    out = np.empty((n, h, w, 3))
    for i in range(n):
        k = k_model[i]
        cam = np.stack([(u - k[0, 2]) * depth[i] / k[0, 0], (v - k[1, 2]) * depth[i] / k[1, 1], depth[i]], -1)
        rot, t = extrinsics[i, :, :3], extrinsics[i, :, 3]
        out[i] = (cam - t) @ rot
    return out


def check_consistent(rec, photos: dict[str, np.ndarray]) -> None:
    """The stored arrays agree with each other and with the photos."""
    n = rec.num_images
    h, w = rec.model_hw
    assert rec.depth.shape == (n, h, w) and np.all(rec.depth > 0)
    assert np.all(rec.depth_conf >= 1.0) and np.all(rec.point_map_conf >= 1.0)
    # Unprojecting depth with the stored cameras gives the stored world points.
    np.testing.assert_allclose(rec.world_points, unproject(rec.depth, rec.extrinsics, rec.intrinsics_model),
                               rtol=1e-4, atol=1e-5)
    for i in range(n):
        k = rec.intrinsics_model[i]
        assert k[0, 2] == pytest.approx(w / 2) and k[1, 2] == pytest.approx(h / 2)
        # Photo intrinsics send a camera point to the photo pixel that the pixel map gives for its model pixel.
        x0, y0, x1, y1 = rec.valid_box[i]
        ys, xs = np.mgrid[y0:y1:17, x0:x1:23].reshape(2, -1)
        centre = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=float)])
        ray = np.linalg.inv(k) @ centre * 2.5
        model_px = (k @ ray)[:2] / (k @ ray)[2]
        photo_px = (rec.intrinsics[i] @ ray)[:2] / (rec.intrinsics[i] @ ray)[2]
        sx, sy, ox, oy = rec.pixel_map[i]
        np.testing.assert_allclose(photo_px[0], sx * model_px[0] + ox, atol=1e-6)
        np.testing.assert_allclose(photo_px[1], sy * model_px[1] + oy, atol=1e-6)
        # ... and that photo pixel has the model pixel's colour (R encodes x, G encodes y in the test photos).
        photo = photos[rec.image_names[i]]
        ph, pw = photo.shape[:2]
        assert tuple(rec.original_sizes[i]) == (pw, ph)
        px = np.clip(np.floor(photo_px[0]).astype(int), 0, pw - 1)
        py = np.clip(np.floor(photo_px[1]).astype(int), 0, ph - 1)
        inner = (px > 2) & (px < pw - 3) & (py > 2) & (py < ph - 3)
        got = rec.colors[i, ys, xs][inner].astype(int)
        want = photo[py, px][inner].astype(int)
        assert np.abs(got[:, :2] - want[:, :2]).max() <= 4
        # Padding is marked invalid, the rest valid.
        assert rec.valid_mask[i].sum() == (x1 - x0) * (y1 - y0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


def test_reconstruct_arrays_are_consistent(tmp_path, model):
    paths = write_photos(tmp_path / "photos")
    stages = []
    rec = inference.reconstruct([str(tmp_path / "photos")], model=model, config=str(TINY_CONFIG), device="cpu",
                                progress=lambda stage, fraction, message: stages.append((stage, fraction)))
    assert rec.num_images == 3 and rec.model_hw == (392, 518)
    assert [Path(p).name for p in rec.image_paths] == [p.name for p in paths]
    assert rec.display_paths == rec.image_paths
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in paths}
    check_consistent(rec, photos)
    # The point head's map is kept beside the depth-derived points (a different estimate).
    assert rec.point_map.shape == rec.world_points.shape
    assert not np.allclose(rec.point_map, rec.world_points)
    # Progress: every stage reported, fractions within [0, 1] and reaching 1.
    seen = {s for s, _ in stages}
    assert {"preprocessing", "loading", "inference"} <= seen
    assert all(0.0 <= f <= 1.0 for _, f in stages)
    assert ("inference", 1.0) in stages
    prov = rec.provenance_dict
    assert prov["mode"] == "crop" and prov["precision"] == "fp32" and prov["device"].startswith("cpu")
    assert set(prov["timings"]) == {"preprocessing", "loading", "inference"}


def test_rotated_photo_gets_an_upright_copy_and_run_leaves_nothing_on_failure(tmp_path, model):
    photos = write_photos(tmp_path / "photos", count=2)
    # A JPEG stored landscape with EXIF orientation 6 (rotate 90 degrees clockwise to view): upright portrait.
    rotated = tmp_path / "photos" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo_pixels(160, 120, 3)).save(rotated, quality=95, exif=exif)
    out = tmp_path / "out" / "scene.npz"
    out.parent.mkdir()
    inference.reconstruct_to_file([str(p) for p in photos] + [str(rotated)], out, model=model,
                                  config=str(TINY_CONFIG), device="cpu")
    rec = load_reconstruction(out)
    copy = Path(rec.display_paths[2])
    assert copy.parent == tmp_path / "out" / "scene_images" and copy.suffix == ".png"
    assert Image.open(copy).size == (120, 160) == tuple(rec.original_sizes[2])
    assert rec.display_paths[:2] == rec.image_paths[:2]
    # Crop mode: the portrait fills 518x518 (cropped); the landscapes are padded to it, padding invalid.
    assert rec.model_hw == (518, 518)
    assert rec.valid_mask[2].all() and rec.valid_mask[0].sum() == 518 * 392
    upright = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in photos}
    upright["rotated"] = np.asarray(Image.open(copy).convert("RGB"))
    check_consistent(rec, upright)

    # A run interrupted while writing removes the display folder it created and leaves no file.
    def interrupt_when_writing(stage: str, fraction: float, message: str) -> None:
        if stage == "writing":
            raise KeyboardInterrupt

    out2 = tmp_path / "out" / "again.npz"
    with pytest.raises(KeyboardInterrupt):
        inference.reconstruct_to_file([str(rotated)], out2, model=model, config=str(TINY_CONFIG), device="cpu",
                                      progress=interrupt_when_writing)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.npz", "scene_images"]
    # should_cancel is checked between stages.
    with pytest.raises(CancelledError):
        inference.reconstruct_to_file([str(rotated)], out2, model=model, config=str(TINY_CONFIG), device="cpu",
                                      should_cancel=lambda: True)
    assert not out2.exists()


def test_out_of_memory_message_says_what_to_change(tmp_path, monkeypatch):
    write_photos(tmp_path / "photos", count=3)

    def out_of_memory(*_args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(inference, "_forward", out_of_memory)
    with pytest.raises(OutOfMemoryError) as info:
        inference.reconstruct([str(tmp_path / "photos")], model=torch.nn.Identity(), config=str(TINY_CONFIG),
                              device="cpu", mode="pad")
    message = str(info.value)
    assert "3 image(s)" in message and "518x518" in message
    assert "use fewer images (this run had 3)" in message and "--mode crop" in message
    assert "--precision bf16" in message
    assert info.value.code == "out_of_memory"


def test_model_cache_reuses_the_loaded_model(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path)
    write_photos(tmp_path / "photos", count=2)
    inference.clear_model_cache()
    try:
        messages = []
        for _ in range(2):
            inference.reconstruct([str(tmp_path / "photos")], weights=str(checkpoint), config=str(TINY_CONFIG),
                                  device="cpu", progress=lambda s, f, m: messages.append((s, f, m)))
        loaded = [m for s, f, m in messages if s == "loading" and f == 1.0]
        assert loaded == ["model loaded", "cached model"]
        first = inference._MODEL_CACHE
        assert first is not None and len(first.checkpoint_sha256) == 64
    finally:
        inference.clear_model_cache()


def test_devices_on_this_machine():
    assert choose_device("cpu").type == "cpu"
    assert choose_precision(torch.device("cpu")) is torch.float32
    assert choose_precision(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(RequestError, match="fp16 is not supported on the CPU"):
        choose_precision(torch.device("cpu"), "fp16")
    with pytest.raises(RequestError, match="unknown device 'tpu'"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        assert choose_device("auto").type in ("cpu", "mps")
        with pytest.raises(RequestError, match="device 'cuda' was requested"):
            choose_device("cuda")
    assert describe_device(torch.device("cpu")).startswith("cpu (")


def test_auto_precision_follows_compute_capability(monkeypatch):
    from vggt_blender import devices

    monkeypatch.setattr(devices, "_compute_capability", lambda device: (7, 5))
    assert choose_precision(torch.device("cuda"), "auto") is torch.float16
    with pytest.raises(RequestError, match="compute capability 8.0"):
        choose_precision(torch.device("cuda"), "bf16")
    monkeypatch.setattr(devices, "_compute_capability", lambda device: (9, 0))
    assert choose_precision(torch.device("cuda"), "auto") is torch.bfloat16
    assert choose_precision(torch.device("mps"), "auto") is torch.float32


def test_result_summary_is_json(tmp_path, model):
    write_photos(tmp_path / "photos", count=2)
    rec = inference.reconstruct([str(tmp_path / "photos")], model=model, config=str(TINY_CONFIG), device="cpu")
    summary = inference.result_summary(rec, tmp_path / "x.npz")
    assert json.loads(json.dumps(summary))["images"] == 2
    assert summary["points"] == int(rec.valid_mask.sum()) == 2 * 392 * 518

"""The inference pipeline end to end with a tiny VGGT: numbers consistent across the stored arrays.

The tiny checkpoint and textured photos come from tests/helpers.py (shared with test_cli.py and test_worker.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_blender.engine import inference
from vggt_blender.engine.devices import choose_device, choose_precision, describe_device
from vggt_blender.errors import CancelledError, OutOfMemoryError, RequestError
from vggt_blender.preprocess import load_image
from vggt_blender.io.reconstruction import load_reconstruction
from tests.helpers import (TINY_CONFIG, check_consistent, photo_pixels, tiny_model, write_photos,
                           write_tiny_checkpoint)

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


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
    assert copy.parent.parent == tmp_path / "out" / "scene_images" and copy.suffix == ".jpg"
    assert Image.open(copy).format == "JPEG" and Image.open(copy).size == (120, 160) == tuple(rec.original_sizes[2])
    assert rec.display_paths[:2] == rec.image_paths[:2]
    # Crop mode: the portrait fills 518x518 (cropped); the landscapes are padded to it, padding invalid.
    assert rec.model_hw == (518, 518)
    assert rec.valid_mask[2].all() and rec.valid_mask[0].sum() == 518 * 392
    upright = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in photos}
    upright["rotated"] = np.asarray(load_image(str(rotated)))
    check_consistent(rec, upright)
    # The copy is the upright photo re-encoded at quality 95: close, not bit-exact.
    assert np.abs(np.asarray(Image.open(copy).convert("RGB"), dtype=float) - upright["rotated"]).mean() < 3

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


def test_upright_copies_have_unique_names_and_report_progress(tmp_path, model):
    # Two rotated photos with the same stem in different folders (plus case variants) get distinct copies.
    sources = []
    for folder, stem in (("a", "IMG"), ("b", "IMG"), ("c", "img"), ("d", "IMG_2")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / f"{stem}.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(photo_pixels(160, 120, len(sources))).save(path, quality=95, exif=exif)
        sources.append(str(path))
    seen = []
    out = tmp_path / "scene.npz"
    rec = inference.reconstruct_to_file(sources, out, model=model, config=str(TINY_CONFIG), device="cpu",
                                        progress=lambda *a: seen.append(a))
    names = [Path(p).name for p in rec.display_paths]
    assert len(set(n.lower() for n in names)) == 4 and names[0] == "IMG.jpg"
    assert all(Path(p).is_file() and Path(p).parent.parent == tmp_path / "scene_images" for p in rec.display_paths)
    writing = [f for stage, f, _ in seen if stage == "writing"]
    assert writing[:1] == [0.0] and writing[-1] == 1.0 and 0.5 in writing and len(writing) >= 6
    assert writing == sorted(writing)


def test_unwritable_output_folder_is_reported_before_inference(tmp_path, model, monkeypatch):
    write_photos(tmp_path / "photos", count=2)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.name != "posix" or os.geteuid() == 0:  # root ignores the mode bits: refuse the file as the OS would
        def refuse(*_a, **_k):
            raise PermissionError(13, "Permission denied", str(locked / ".vggt_tmp_x"))

        monkeypatch.setattr("tempfile.mkstemp", refuse)
    stages = []
    try:
        with pytest.raises(RequestError, match="cannot write to the output folder") as info:
            inference.reconstruct_to_file([str(tmp_path / "photos")], locked / "scene.npz", model=model,
                                          config=str(TINY_CONFIG), device="cpu",
                                          progress=lambda *a: stages.append(a[0]))
    finally:
        locked.chmod(0o700)
    assert str(locked) in str(info.value) and stages == []  # nothing ran
    assert list(locked.iterdir()) == []


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
    with pytest.raises(RequestError, match="unknown device 'cuda:abc'"):
        choose_device("cuda:abc")
    if not torch.cuda.is_available():
        assert choose_device("auto").type in ("cpu", "mps")
        with pytest.raises(RequestError, match="device 'cuda' was requested"):
            choose_device("cuda")
    assert describe_device(torch.device("cpu")).startswith("cpu (")


def test_auto_precision_follows_compute_capability(monkeypatch):
    from vggt_blender.engine import devices

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


# ------------------------------------------------------------------------------------------ fast path


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def fast_setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fast")
    write_photos(tmp / "photos", count=2)
    return {"tmp": tmp, "photos": str(tmp / "photos"), "checkpoint": str(write_tiny_checkpoint(tmp))}


def _run(setup: dict, fast_path: str, precision: str = "fp32", **more):
    return inference.reconstruct([setup["photos"]], weights=setup["checkpoint"], config=str(TINY_CONFIG),
                                 device="cpu", precision=precision, fast_path=fast_path, **more)


def test_fast_path_gives_the_standard_reconstruction(fast_setup):
    inference.clear_model_cache()
    try:
        standard = _run(fast_setup, "off")
        assert standard.provenance_dict["path"] == "standard"
        fast = _run(fast_setup, "on")
        assert fast.provenance_dict["path"] == "fast"
        assert inference._MODEL_CACHE.model.execution.lean
        errors = {key: _relative(getattr(fast, key), getattr(standard, key))
                  for key in ("depth", "world_points", "point_map", "extrinsics", "intrinsics", "depth_conf")}
        assert max(errors.values()) < 1e-5, errors
        # bf16 on the CPU (the auto choice stays standard there; "on" forces the fast path): close, not equal.
        autocast = _run(fast_setup, "auto", "bf16")
        assert autocast.provenance_dict["path"] == "standard"
        low = _run(fast_setup, "on", "bf16")
        runner = inference._MODEL_CACHE.model
        assert runner.aggregator.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
        assert runner.depth_head.projects[0].weight.dtype == torch.float32
        assert low.provenance_dict["precision"] == "bf16" and low.provenance_dict["path"] == "fast"
        # Measured: fast bf16 depth 5e-5, points 2e-2, extrinsics 2e-2; autocast bf16 5e-5, 3e-2, 3e-2.
        for key in ("depth", "world_points", "point_map", "extrinsics"):
            err_fast = _relative(getattr(low, key), getattr(standard, key))
            err_autocast = _relative(getattr(autocast, key), getattr(standard, key))
            assert err_fast < 5e-2 and err_fast <= 2 * err_autocast + 1e-4, (key, err_fast, err_autocast)
        assert inference.result_summary(low)["inference_path"] == "fast"
    finally:
        inference.clear_model_cache()


def test_int8_precision_on_the_cpu(fast_setup):
    from vggt_blender.model.quantization import is_int8

    inference.clear_model_cache()
    try:
        standard = _run(fast_setup, "off")
        autocast = _run(fast_setup, "off", "bf16")
        for fast_path in ("off", "on"):
            low = _run(fast_setup, fast_path, "int8")
            assert low.provenance_dict["precision"] == "int8"
            assert is_int8(inference._MODEL_CACHE.model)
            for key in ("depth", "world_points", "extrinsics"):
                err = _relative(getattr(low, key), getattr(standard, key))
                err_bf16 = _relative(getattr(autocast, key), getattr(standard, key))
                print(f"int8 {fast_path} {key}: {err:.1e} (bf16 autocast {err_bf16:.1e})")
                assert 0 < err < 0.15, (fast_path, key, err)  # measured 1e-1 at most (bf16: 2e-2)
    finally:
        inference.clear_model_cache()


def test_given_model_runs_the_fast_path_on_a_copy(tmp_path, model):
    write_photos(tmp_path / "photos", count=2)
    before = {k: v.clone() for k, v in model.aggregator.state_dict().items()}
    rec = inference.reconstruct([str(tmp_path / "photos")], model=model, config=str(TINY_CONFIG), device="cpu",
                                precision="bf16", fast_path="on")
    assert rec.provenance_dict["path"] == "fast"
    after = model.aggregator.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(RequestError, match="unknown fast_path 'fast'"):
        inference.reconstruct([str(tmp_path / "photos")], model=model, device="cpu", fast_path="fast")


def test_fast_runner_is_cached_and_reports_every_step(fast_setup, monkeypatch):
    loads = []
    real_load_model = inference.load_model

    def counting_load_model(*args, **kwargs):
        loads.append(args[1])
        return real_load_model(*args, **kwargs)

    monkeypatch.setattr(inference, "load_model", counting_load_model)
    inference.clear_model_cache()
    try:
        runs = []
        for _ in range(2):
            events = []
            _run(fast_setup, "on", progress=lambda s, f, m: events.append((s, f, m)))
            runs.append((events, inference._MODEL_CACHE.model))
        assert loads == [fast_setup["checkpoint"]]  # loaded once, then reused
        assert runs[0][1] is runs[1][1] and runs[1][1].execution.lean
        assert not any(b._forward_hooks for b in runs[1][1].aggregator.global_blocks)  # no progress hook left
        for (events, _), message in zip(runs, ["model loaded", "cached model"]):
            assert [m for s, f, m in events if s == "loading" and f == 1.0] == [message]
            fractions = [f for s, f, m in events if s == "inference"]
            # 0, then one report per aggregator step (24 in the tiny model) up to 0.9, then 1.
            assert fractions[0] == 0.0 and fractions[-1] == 1.0 and len(fractions) == 24 + 2
            assert fractions[-2] == pytest.approx(0.9) and fractions == sorted(fractions)
            assert "fast path" in next(m for s, f, m in events if s == "inference")
    finally:
        inference.clear_model_cache()


def test_cancel_during_fast_inference_leaves_no_output(fast_setup, tmp_path):
    inference.clear_model_cache()
    try:
        seen = []
        out = tmp_path / "scene.npz"
        with pytest.raises(CancelledError):
            inference.reconstruct_to_file(
                [fast_setup["photos"]], out, weights=fast_setup["checkpoint"], config=str(TINY_CONFIG),
                device="cpu", fast_path="on", progress=lambda s, f, m: seen.append((s, f)),
                should_cancel=lambda: any(s == "inference" and f >= 0.3 for s, f in seen))
        steps = [f for s, f in seen if s == "inference"]
        assert 0.3 <= steps[-1] < 0.5 and "writing" not in {s for s, _ in seen}  # stopped mid-aggregator
        assert list(tmp_path.iterdir()) == []
        # The cached runner is left usable: the next run completes from the cache.
        runner = inference._MODEL_CACHE.model
        assert not any(b._forward_hooks for b in runner.aggregator.global_blocks)
        messages = []
        inference.reconstruct_to_file([fast_setup["photos"]], out, weights=fast_setup["checkpoint"],
                                      config=str(TINY_CONFIG), device="cpu", fast_path="on",
                                      progress=lambda s, f, m: messages.append(m))
        assert "cached model" in messages and load_reconstruction(out).provenance_dict["path"] == "fast"
    finally:
        inference.clear_model_cache()


def test_out_of_memory_on_the_fast_path(fast_setup, monkeypatch):
    from vggt_blender.model.aggregator import Aggregator

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB")

    inference.clear_model_cache()
    try:
        monkeypatch.setattr(Aggregator, "_forward_lean", out_of_memory)
        with pytest.raises(OutOfMemoryError) as info:
            _run(fast_setup, "on", "bf16", mode="pad")
        message = str(info.value)
        assert info.value.code == "out_of_memory"
        assert message.startswith("out of GPU memory running 2 image(s) at 518x518 (pad, bf16) on cpu")
        assert "use fewer images (this run had 2)" in message and "--mode crop" in message
        assert "--fast-path" not in message  # already on the lean path
        assert not any(b._forward_hooks for b in inference._MODEL_CACHE.model.aggregator.global_blocks)

        # Running out while loading names the file and the (smaller) size of the bf16 weights.
        inference.clear_model_cache()
        monkeypatch.setattr(inference, "load_model", out_of_memory)
        with pytest.raises(OutOfMemoryError, match="bf16 weights alone need about 3 GB") as info:
            _run(fast_setup, "on", "bf16")
        assert fast_setup["checkpoint"] in str(info.value) and inference._MODEL_CACHE is None
    finally:
        inference.clear_model_cache()


def test_standard_path_out_of_memory_on_cuda_suggests_the_fast_path():
    message = inference._oom_message(400, (518, 392), "crop", "bf16", "cuda:0 NVIDIA H100", "standard")
    assert "use --fast-path on" in message
    assert "--fast-path" not in inference._oom_message(400, (518, 392), "crop", "bf16", "cuda:0 X", "fast")


def test_auto_choice_of_path():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference.use_fast_path("auto", cuda, torch.bfloat16) and inference.use_fast_path("auto", cuda,
                                                                                              torch.float16)
    assert not inference.use_fast_path("auto", cuda, torch.float32)
    assert not inference.use_fast_path("auto", cpu, torch.bfloat16)
    assert not inference.use_fast_path("auto", torch.device("mps"), torch.float16)
    assert inference.use_fast_path("on", cpu, torch.float32) and not inference.use_fast_path("off", cuda,
                                                                                              torch.bfloat16)


def test_fast_path_option_reaches_the_engine_from_cli_and_worker(tmp_path, monkeypatch):
    # The runs themselves are test_cli's and test_worker's; here only that the option is parsed, checked and
    # handed to reconstruct_to_file (which the fast-path tests above show honouring it).
    import io

    from vggt_blender import cli
    from vggt_blender.jobs import worker

    assert cli.build_parser().parse_args(["reconstruct", "x", "-o", "y.npz"]).fast_path == "auto"
    base = {"images": ["a.jpg"], "output": "o.npz"}
    assert worker.parse_request(base)["fast_path"] == "auto"
    for bad in ("yes", True, None):
        with pytest.raises(RequestError, match="fast_path"):
            worker.parse_request({**base, "fast_path": bad})
    seen: list[str] = []

    def engine(images, output, **options):
        seen.append(options["fast_path"])
        raise RequestError("stop here")

    monkeypatch.setattr(inference, "reconstruct_to_file", engine)
    request = worker.parse_request({"images": ["a.jpg"], "output": str(tmp_path / "w.npz"), "fast_path": "off"})
    with pytest.raises(RequestError, match="stop here"):
        worker.run_request(request, worker.Emitter(io.StringIO()), [])
    assert cli.main(["reconstruct", "x", "-o", str(tmp_path / "c.npz"), "--fast-path", "on", "-q"]) == 1
    assert seen == ["off", "on"]


def _rotated_jpeg(path: Path, seed: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo_pixels(160, 120, seed)).save(path, quality=95, exif=exif)
    return path


def test_a_failed_rerun_keeps_the_old_file_and_its_photos(tmp_path, model):
    """Issue 9 §2.1: the upright copies appear together with the .npz or not at all."""
    source = _rotated_jpeg(tmp_path / "rotated.jpg", 1)
    out = tmp_path / "out" / "scene.npz"
    kw = dict(model=model, config=str(TINY_CONFIG), device="cpu")
    inference.reconstruct_to_file([str(source)], out, **kw)
    old_file = out.read_bytes()
    old_copy = Path(load_reconstruction(out).display_paths[0])
    old_pixels = old_copy.read_bytes()

    # The photo changes and the re-run fails once its copies are written (the .npz write is interrupted).
    _rotated_jpeg(source, 2)

    def interrupt_at_the_file(stage: str, fraction: float, message: str) -> None:
        if stage == "writing" and message == str(out):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        inference.reconstruct_to_file([str(source)], out, progress=interrupt_at_the_file, **kw)
    assert out.read_bytes() == old_file
    assert Path(load_reconstruction(out).display_paths[0]) == old_copy and old_copy.read_bytes() == old_pixels
    assert [p.name for p in (tmp_path / "out" / "scene_images").iterdir()] == [old_copy.parent.name]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.npz", "scene_images"]

    # A disk that fills while the .npz is written: the same.
    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy.lib.format.write_array", full_disk)
        with pytest.raises(Exception, match="No space left"):
            inference.reconstruct_to_file([str(source)], out, **kw)
    assert out.read_bytes() == old_file and old_copy.read_bytes() == old_pixels
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.npz", "scene_images"]
    assert [p.name for p in (tmp_path / "out" / "scene_images").iterdir()] == [old_copy.parent.name]

    # A successful re-run names a new folder of its own and leaves the old copies as they were.
    rec = inference.reconstruct_to_file([str(source)], out, **kw)
    assert Path(rec.display_paths[0]).parent != old_copy.parent and old_copy.read_bytes() == old_pixels


def test_a_cancelled_run_leaves_another_runs_copies(tmp_path, model):
    source = _rotated_jpeg(tmp_path / "rotated.jpg", 1)
    out = tmp_path / "scene.npz"
    other = tmp_path / "scene_images" / "other-run" / "photo.jpg"

    def another_run_starts_then_cancel(stage: str, fraction: float, message: str) -> None:
        if stage == "inference" and not other.exists():  # a concurrent run makes the folder meanwhile
            other.parent.mkdir(parents=True)
            other.write_bytes(b"jpeg")
        if stage == "writing":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        inference.reconstruct_to_file([str(source)], out, model=model, config=str(TINY_CONFIG), device="cpu",
                                      progress=another_run_starts_then_cancel)
    assert other.read_bytes() == b"jpeg"
    assert [p.name for p in (tmp_path / "scene_images").iterdir()] == ["other-run"] and not out.exists()


def test_a_failed_run_removes_the_output_folders_it_made(tmp_path, model):
    source = _rotated_jpeg(tmp_path / "rotated.jpg", 1)
    with pytest.raises(CancelledError):
        inference.reconstruct_to_file([str(source)], tmp_path / "new" / "deeper" / "scene.npz", model=model,
                                      config=str(TINY_CONFIG), device="cpu", should_cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rotated.jpg"]
    # An existing folder named as the output is said before anything runs.
    (tmp_path / "taken.npz").mkdir()
    with pytest.raises(RequestError, match="is a folder"):
        inference.reconstruct_to_file([str(source)], tmp_path / "taken.npz", model=model,
                                      config=str(TINY_CONFIG), device="cpu",
                                      progress=lambda *a: pytest.fail("the run started"))

"""Photos -> Reconstruction: collect and preprocess the images, run VGGT, decode cameras, build the file's arrays.

`reconstruct()` returns the in-memory Reconstruction; `reconstruct_to_file()` also writes the .npz (atomically) and
the upright copies of EXIF-rotated photos, and removes what it created when it fails or is cancelled.

Two execution paths give the same outputs: "standard" (`VGGT.forward`, under autocast for bf16/fp16) and "fast"
(`model.fast_path.FastRunner`: bf16/fp16 aggregator weights, only the layers the heads read kept, heads per chunk
of frames, images copied to the device per chunk). `fast_path="auto"` picks the fast one on CUDA in bf16/fp16,
where the standard path's fp32 tokens run out of memory past a few hundred photos.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .devices import choose_device, choose_precision, describe_device, precision_name, uses_autocast
from ..errors import CancelledError, OutOfMemoryError, RequestError
from ..geometry.cameras import depth_to_world_points, intrinsics_to_photo, pose_encoding_to_extrinsics_intrinsics
from ..io.photo_paths import collect_images
from ..model import VGGTConfig
from ..model.fast_path import FastRunner, load_fast, prepare_fast
from ..preprocess import load_image, preprocess_images
from ..io.reconstruction import Reconstruction, make_provenance, save_reconstruction
from ..weights.discovery import resolve_weights, sha256_file
from ..weights.loading import load_model

ProgressCallback = Callable[[str, float, str], None]
CancelCheck = Callable[[], bool]
WarningCallback = Callable[[str], None]

STAGES = ("preprocessing", "loading", "inference", "writing")  # in the order they run
FAST_PATH_CHOICES = ("auto", "on", "off")


@dataclass
class _CachedModel:
    key: tuple
    model: Any  # a VGGT (standard path) or a FastRunner (fast path)
    checkpoint_sha256: str


# One loaded model or fast runner, kept so a long-lived worker (keep_alive) does not reload 5 GB for every request.
_MODEL_CACHE: _CachedModel | None = None


def clear_model_cache() -> None:
    """Forget the cached model and give its GPU memory back."""
    global _MODEL_CACHE
    _MODEL_CACHE = None
    _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _noop_progress(stage: str, fraction: float, message: str) -> None:
    pass


def _resolve_config(config: Any) -> tuple[Any, str]:
    """(VGGTConfig, name for provenance) from a preset name, a JSON file path or a VGGTConfig."""
    if isinstance(config, VGGTConfig):
        return config, "custom"
    text = str(config)
    resolved = VGGTConfig.resolve(text)  # the one preset-or-file lookup (model/config.py)
    path = Path(text).expanduser()
    is_file = text.lower().endswith(".json") or path.exists()
    return resolved, (str(path.resolve()) if is_file else text)


def _check_cancel(should_cancel: CancelCheck | None) -> None:
    if should_cancel is not None and should_cancel():
        raise CancelledError("cancelled by the user")


def use_fast_path(choice: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Resolve the `fast_path` option: "on", "off", or "auto" = fast on CUDA in bf16/fp16, standard otherwise."""
    choice = (choice or "auto").lower()
    if choice not in FAST_PATH_CHOICES:
        raise RequestError(f"unknown fast_path '{choice}': choose one of {', '.join(FAST_PATH_CHOICES)}")
    if choice == "auto":
        return device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    return choice == "on"


def load_cached_model(config: Any, config_name: str, weights_path: str, device: torch.device,
                      dtype: torch.dtype, fast: bool = False) -> tuple[Any, str, bool]:
    """(model or FastRunner, checkpoint sha256, was_cached): reuse the cached one when the key matches."""
    global _MODEL_CACHE
    key = (str(Path(weights_path).resolve()), config_name, str(device), str(dtype), "fast" if fast else "standard")
    if _MODEL_CACHE is not None and _MODEL_CACHE.key == key:
        return _MODEL_CACHE.model, _MODEL_CACHE.checkpoint_sha256, True
    # Drop the old model before loading a new one: two 5 GB models rarely fit together.
    clear_model_cache()
    if fast:
        # Straight to the device tensor by tensor: aggregator matrices in `dtype`, heads fp32; never an fp32
        # copy of the aggregator on the GPU.
        model = load_fast(config, weights_path, device, dtype)
    else:
        # Weights stay fp32: reduced precision comes from autocast, and the heads run in fp32 by design.
        model = load_model(config, weights_path, device, torch.float32)
        model.eval()
    digest = sha256_file(weights_path)
    _MODEL_CACHE = _CachedModel(key, model, digest)
    return model, digest, False


def _forward(model: Any, images: torch.Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """The bare model call on either path (the worker's fault hook replaces this in tests)."""
    if isinstance(model, FastRunner):
        return model(images)  # its own dtypes and inference mode; images may be on the host
    if uses_autocast(device, dtype):
        autocast = torch.autocast(device_type=device.type, dtype=dtype)
    else:
        autocast = contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return model(images)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # MPS and some CUDA allocator paths raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _oom_message(count: int, size: tuple[int, int], mode: str, precision: str, device_text: str,
                 path: str = "standard") -> str:
    # Memory grows with the number of images (all frames attend to each other) and with the input size;
    # preprocessing fixes the width at 518, so the image count is the main knob.
    advice = [f"use fewer images (this run had {count})"]
    if path == "standard" and device_text.startswith("cuda"):
        advice.append("use --fast-path on (the memory-lean path)")
    if mode == "pad":
        advice.append("use --mode crop (pad makes every image 518x518; crop keeps landscape photos shorter)")
    if precision == "fp32":
        advice.append("use --precision bf16 (fp16 on GPUs older than Ampere)")
    advice.append("close other programs using the GPU")
    return (f"out of GPU memory running {count} image(s) at {size[0]}x{size[1]} ({mode}, {precision}) on "
            f"{device_text}: " + "; ".join(advice))


def _block_progress_hooks(model: Any, report: Callable[[float], None]) -> list:
    """Report the fraction of aggregator blocks done while the single forward call runs."""
    aggregator = getattr(model, "aggregator", None)
    blocks = getattr(aggregator, "global_blocks", None)
    if blocks is None:
        return []
    total = len(blocks)
    handles = []
    for index, block in enumerate(blocks):
        fraction = 0.9 * (index + 1) / total  # the heads take the last part
        handles.append(block.register_forward_hook(lambda *_a, f=fraction: report(f)))
    return handles


UPRIGHT_JPEG_QUALITY = 95


def _unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, or `stem_2`, `stem_3`...: the first name not taken yet (case-insensitively, for Windows/macOS)."""
    name, count = stem, 1
    while name.lower() in used:
        count += 1
        name = f"{stem}_{count}"
    used.add(name.lower())
    return name


def _display_copies(paths: Sequence[str], rotated: Sequence[bool], folder: Path | None,
                    report: ProgressCallback = _noop_progress) -> list[str]:
    """Display paths: the source, or an upright JPEG copy (quality 95, written into `folder`) for EXIF-rotated
    photos. Progress goes to the "writing" stage (its first half)."""
    display = [str(p) for p in paths]
    todo = [i for i, r in enumerate(rotated) if r]
    if folder is None or not todo:
        return display
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RequestError(f"{folder}: cannot create the folder for upright copies of rotated photos: "
                           f"{exc.strerror or exc}", file=str(folder)) from exc
    used: set[str] = set()
    report("writing", 0.0, f"upright copies of {len(todo)} rotated photo(s)")
    for done, index in enumerate(todo, start=1):
        target = folder / f"{_unique_stem(Path(paths[index]).stem, used)}.jpg"
        try:
            load_image(str(paths[index])).save(target, format="JPEG", quality=UPRIGHT_JPEG_QUALITY)
        except OSError as exc:
            raise RequestError(f"{target}: cannot write the upright copy of {paths[index]}: "
                               f"{exc.strerror or exc}", file=str(target)) from exc
        display[index] = str(target.resolve())
        report("writing", 0.5 * done / len(todo), f"upright copy {done}/{len(todo)}")
    return display


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _loading_oom_message(weights_path: str, device_text: str, fast: bool, precision: str) -> str:
    # The fast path holds the aggregator (most of the 1.2B parameters) in bf16/fp16, the heads in fp32.
    lean = fast and precision != "fp32"
    need = f"the {precision} weights alone need about 3 GB" if lean else "the fp32 weights alone need about 5 GB"
    return (f"out of GPU memory loading the model from {weights_path} onto {device_text}: {need}; close other "
            "programs using the GPU, or use --device cpu")


def reconstruct(image_paths: Iterable[str], weights: str | None = None, device: str = "auto",
                precision: str = "auto", mode: str = "crop", config: Any = "vggt-1b",
                progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                model: Any = None, warn: WarningCallback | None = None,
                display_dir: str | Path | None = None, fast_path: str = "auto") -> Reconstruction:
    """Run VGGT on photos (files or folders) and return a Reconstruction.

    `model` skips loading (its weights are then unknown to provenance unless `weights` is given too); a
    FastRunner always runs the fast path, a VGGT given with the fast path chosen is wrapped by `prepare_fast`
    on a copy (the caller's model is left as it is).
    `display_dir`: where upright copies of EXIF-rotated photos go (none are written without it).
    `fast_path`: "auto" (fast on CUDA with bf16/fp16, standard otherwise), "on" (any device, CPU included)
    or "off" (always `VGGT.forward`).
    """
    report = progress or _noop_progress
    timings: dict[str, float] = {}
    paths, warnings = collect_images([str(p) for p in image_paths])  # raises when there are no images
    for line in warnings:
        if warn is not None:
            warn(line)

    torch_device = choose_device(device)
    dtype = choose_precision(torch_device, precision)
    device_text = describe_device(torch_device)
    model_config, config_name = _resolve_config(config)
    fast = isinstance(model, FastRunner) or use_fast_path(fast_path, torch_device, dtype)

    weights_path: str | None = None
    if model is None or weights is not None:
        weights_path = str(resolve_weights(weights))
    _check_cancel(should_cancel)

    start = time.perf_counter()
    report("preprocessing", 0.0, f"{len(paths)} image(s), {mode}")

    def image_done(done: int, total: int) -> None:
        report("preprocessing", done / total, f"{done}/{total} image(s)")
        _check_cancel(should_cancel)

    prep = preprocess_images(list(paths), mode, progress=image_done)
    for note in prep.notes:
        if warn is not None:
            warn(note)
    report("preprocessing", 1.0, f"{len(paths)} image(s) at {prep.model_size[0]}x{prep.model_size[1]}")
    timings["preprocessing"] = time.perf_counter() - start
    _check_cancel(should_cancel)

    start = time.perf_counter()
    checkpoint_sha = None
    if model is None:
        report("loading", 0.0, f"{Path(weights_path).name} on {device_text}")
        try:
            model, checkpoint_sha, cached = load_cached_model(model_config, config_name, weights_path,
                                                              torch_device, dtype, fast=fast)
        except BaseException as exc:
            if _is_out_of_memory(exc):
                clear_model_cache()
                raise OutOfMemoryError(_loading_oom_message(weights_path, device_text, fast,
                                                            precision_name(dtype))) from None
            raise
        report("loading", 1.0, "cached model" if cached else "model loaded")
    else:
        if fast and not isinstance(model, FastRunner):
            model = prepare_fast(copy.deepcopy(model), torch_device, dtype)
        report("loading", 1.0, "model given")
    timings["loading"] = time.perf_counter() - start
    _check_cancel(should_cancel)

    start = time.perf_counter()
    count = len(paths)
    width, height = int(prep.model_size[0]), int(prep.model_size[1])
    path_name = "fast" if fast else "standard"
    report("inference", 0.0, f"{count} image(s) on {device_text}, {precision_name(dtype)}, {path_name} path")

    def block_done(fraction: float) -> None:
        report("inference", fraction, f"{count} image(s)")
        _check_cancel(should_cancel)

    if isinstance(model, FastRunner):
        # One step per aggregator block pair, 90 % of the stage like the hooks below; raising cancels.
        hooks = []
        model.on_step = lambda done, total: block_done(0.9 * done / total)
        images = prep.images  # stays on the host: the runner copies one chunk of frames at a time
    else:
        hooks = _block_progress_hooks(model, block_done)
        images = prep.images.to(torch_device, dtype=torch.float32)
    try:
        outputs = _forward(model, images, torch_device, dtype)
        pose_enc = _as_numpy(outputs["pose_enc"])[0].astype(np.float64)
        depth = _as_numpy(outputs["depth"])[0, ..., 0]
        depth_conf = _as_numpy(outputs["depth_conf"])[0]
        point_map = _as_numpy(outputs["world_points"])[0]
        point_map_conf = _as_numpy(outputs["world_points_conf"])[0]
        del outputs
    except BaseException as exc:
        if _is_out_of_memory(exc):
            raise OutOfMemoryError(_oom_message(count, (width, height), mode, precision_name(dtype),
                                                device_text, path_name)) from None
        raise
    finally:
        if isinstance(model, FastRunner):
            model.on_step = None  # the cached runner must not call back into a finished run
        for handle in hooks:
            handle.remove()
        del images
        if torch_device.type != "cpu":
            _free_memory()
    report("inference", 1.0, f"{count} image(s)")
    timings["inference"] = time.perf_counter() - start
    _check_cancel(should_cancel)

    extrinsics, intrinsics_model = pose_encoding_to_extrinsics_intrinsics(pose_enc, (height, width))
    extrinsics = np.asarray(extrinsics, dtype=np.float64).reshape(count, 3, 4)
    intrinsics_model = np.asarray(intrinsics_model, dtype=np.float64).reshape(count, 3, 3)
    pixel_map = np.asarray(prep.pixel_map, dtype=np.float64)
    intrinsics = np.asarray(intrinsics_to_photo(intrinsics_model, pixel_map), dtype=np.float64)
    world_points = depth_to_world_points(depth, extrinsics, intrinsics_model, dtype=np.float32)


    source_paths = [str(Path(p).resolve()) for p in prep.paths]
    display_paths = _display_copies(source_paths, list(prep.rotated),
                                    Path(display_dir) if display_dir is not None else None, report)

    provenance = make_provenance(
        checkpoint=Path(weights_path).name if weights_path else None,
        checkpoint_sha256=checkpoint_sha,
        mode=mode,
        precision=precision_name(dtype),
        device=device_text,
        timings={k: round(v, 4) for k, v in timings.items()},
        checkpoint_path=str(Path(weights_path).resolve()) if weights_path else None,
        config=config_name,
        torch_version=torch.__version__,
        path=path_name,
    )
    return Reconstruction(
        image_paths=source_paths,
        display_paths=display_paths,
        image_names=[Path(p).stem for p in source_paths],
        original_sizes=np.asarray(prep.original_sizes, dtype=np.int32),
        model_size=np.asarray(prep.model_size, dtype=np.int32),
        pixel_map=pixel_map,
        valid_box=np.asarray(prep.valid_box, dtype=np.int32),
        extrinsics=extrinsics,
        intrinsics=intrinsics,
        intrinsics_model=intrinsics_model,
        depth=depth.astype(np.float32),
        depth_conf=depth_conf.astype(np.float32),
        world_points=world_points,
        point_map=point_map.astype(np.float32),
        point_map_conf=point_map_conf.astype(np.float32),
        colors=prep.colors,
        valid_mask=prep.valid_mask,
        provenance=provenance,
    )


def display_folder_for(output: str | Path) -> Path:
    """Where upright copies of rotated photos go: `<output stem>_images/` beside the output file."""
    output = Path(output)
    return output.with_name(f"{output.stem}_images")


def probe_output_folder(output: Path) -> None:
    """Create and remove a temporary file beside `output`, so an unwritable folder is reported before the
    model runs rather than after it."""
    import os
    import tempfile

    from ..io.atomic import TEMP_PREFIX

    folder = output.parent
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise RequestError(f"{folder}: cannot write to the output folder: {exc.strerror or exc}",
                           file=str(output)) from exc


def reconstruct_to_file(image_paths: Iterable[str], output: str | Path, *,
                        progress: ProgressCallback | None = None, **options: Any) -> Reconstruction:
    """`reconstruct()` (options passed on, `fast_path` included) then write the .npz atomically. On any failure
    (cancel included) nothing of this run is left behind: no output file and no display folder it created.
    Returns the Reconstruction."""
    output = Path(output).expanduser().resolve()
    if output.suffix.lower() != ".npz":
        raise RequestError(f"the output must be a .npz file: {output}", file=str(output))
    try:  # a pipeline naming a fresh output folder expects it to be made
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RequestError(f"{output.parent}: cannot create the output folder ({exc.strerror or exc})",
                           file=str(output)) from exc
    probe_output_folder(output)
    report = progress or _noop_progress
    folder = display_folder_for(output)
    folder_existed = folder.exists()
    done = False
    try:
        rec = _reconstruct_photos_or_shot(image_paths, report, folder, options)
        start = time.perf_counter()
        copies = any(d != i for d, i in zip(rec.display_paths, rec.image_paths))
        report("writing", 0.5 if copies else 0.0, str(output))
        _save_file(output, rec)
        elapsed = time.perf_counter() - start
        report("writing", 1.0, str(output))
        _set_timing(rec, "writing", elapsed)  # in memory only: the file is already written
        done = True
        return rec
    finally:
        if not done and not folder_existed and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


def _set_timing(rec: Reconstruction, stage: str, seconds: float) -> None:
    data = rec.provenance_dict
    data.setdefault("timings", {})[stage] = round(seconds, 4)
    rec.provenance = json.dumps(data, sort_keys=True)


def result_summary(rec: Reconstruction, path: str | Path | None = None) -> dict:
    """Small JSON-able summary for the worker's result line and the CLI's final line."""
    provenance = rec.provenance_dict
    valid = np.asarray(rec.valid_mask)
    return {
        "path": str(path) if path is not None else None,
        "images": len(rec.image_paths),
        "model_size": [int(v) for v in np.asarray(rec.model_size)],
        "points": int(valid.sum()),
        "device": provenance.get("device"),
        "precision": provenance.get("precision"),
        "mode": provenance.get("mode"),
        "inference_path": provenance.get("path"),
        "timings": provenance.get("timings", {}),
    }


# ------------------------------------------------------------------------------------------------------------
# Shots (a video file or an image sequence): routed to engine/shot.py. Kept apart from the photo pipeline.

from ..options import SHOT_REQUEST_FIELDS as SHOT_OPTIONS  # noqa: E402
# Long shots are written compressed: colours, masks and smooth depth shrink, and the writing time stays
# small next to the inference of that many frames.
COMPRESS_FROM_FRAMES = 100


def _reconstruct_photos_or_shot(image_paths: Iterable[str], report: ProgressCallback, folder: Path,
                                options: dict) -> Reconstruction:
    from ..shot.selection import is_shot_input

    inputs = [str(p) for p in image_paths]
    shot = {k: options.pop(k) for k in SHOT_OPTIONS if k in options}
    sequence = bool(shot.pop("sequence", False))
    # A folder is a photo set unless it is asked for as a sequence (--sequence or any frame option).
    asked = sequence or any(shot.get(k) is not None for k in ("every", "start", "end", "max_frames"))
    if not (is_shot_input(inputs) or (asked and len(inputs) == 1 and Path(inputs[0]).is_dir())):
        if asked:
            raise RequestError("--every/--start/--end/--max-frames/--sequence need one video file or one "
                               "image sequence (a folder or a pattern such as shot.%04d.png)")
        return reconstruct(inputs, progress=report, display_dir=folder, **options)
    from .shot import reconstruct_shot, shot_request

    selection, shot_options = shot_request(shot)
    return reconstruct_shot(inputs[0], selection, progress=report, **options, **shot_options)


def _save_file(output: Path, rec: Reconstruction) -> None:
    compress = "frame_numbers" in rec.extra and rec.num_images >= COMPRESS_FROM_FRAMES
    spooled = getattr(rec, "spooled", None)
    if spooled:  # a long shot's xyz maps wait in temporary files (io/spool.py)
        from ..io.spool import save_reconstruction_streamed

        save_reconstruction_streamed(str(output), rec, spooled, compress=compress)
    else:
        save_reconstruction(str(output), rec, compress=compress)

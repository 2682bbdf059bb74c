"""Shot -> Reconstruction: decode the selected frames of a video or image sequence straight to the model
size, run VGGT in one pass or in overlapping chunks, align the chunks (Sim(3)) into one camera path.

Memory: decoded frames are resized as they arrive (the shot is only ever held at model size, uint8, which
is also the file's `colors`); the float input exists per chunk only; every output array is allocated once
for the whole shot and filled chunk by chunk. The chunk size comes from the device's free memory (CUDA:
torch.cuda.mem_get_info; CPU: MemAvailable, less what the outputs will take, with a smaller cap) and an
estimated per-frame cost of the model's activations.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OutOfMemoryError, RequestError
from ..geometry.cameras import pose_encoding_to_extrinsics_intrinsics
from ..io.reconstruction import Reconstruction, make_provenance
from ..io.shot_fields import shot_extra, shot_view_names
from ..preprocess import DEFAULT_TARGET_SIZE, preprocess_frame
from ..shot.align import ShotAssembler
from ..shot.chunks import DEFAULT_OVERLAP, Chunk, choose_chunk_size, plan_chunks
from ..shot.selection import FrameSelection
from ..shot.source import ShotInfo, iter_frames, probe_shot, select_frames
from ..weights.discovery import resolve_weights
from .devices import choose_device, choose_precision, describe_device, is_out_of_memory, precision_name
from . import inference as _inf

from ..options import SHOT_REQUEST_FIELDS  # noqa: E402,F401 - the worker request's shot fields
# Chunks on the CPU stay small: attention over all frames of a chunk is quadratic in time as well.
CPU_CHUNK_CAP = 32
# Output bytes per model pixel kept for the whole shot: depth, depth_conf, point_map_conf (3 x f32),
# point_map (3 x f32), colours (3 x u8). World points and the valid mask are derived (geometry/derive.py), and
# written to the file frame block by frame block (io/spool.py), never held whole.
OUTPUT_BYTES_PER_PIXEL = 3 * 4 + 12 + 3
SPOOL_FROM_FRAMES = 100


def _check_cancel(should_cancel) -> None:
    _inf.Stages(None, should_cancel).check_cancel()


@dataclass
class ShotFrames:
    info: ShotInfo
    numbers: list[int]
    pixels: np.ndarray  # uint8 [N,h,w,3] at the model size
    original_size: tuple[int, int]
    pixel_map: np.ndarray  # float64 [N,4]
    valid_box: np.ndarray  # int32 [N,4]


def decode_shot(source: str, selection: FrameSelection, mode: str = "crop",
                target_size: int | None = DEFAULT_TARGET_SIZE, fps: float | None = None, progress=None,
                should_cancel=None, info: ShotInfo | None = None, model: str = "vggt") -> ShotFrames:
    """Probe, select and decode; each frame is brought to the model size before the next is decoded
    (`model`: the family whose loader to follow; `target_size` None: the family's default)."""
    info = info or probe_shot(source, fps)
    numbers = select_frames(info, selection)
    pixels: np.ndarray | None = None
    maps: list = []
    boxes: list = []
    size = (info.width, info.height)
    for k, (number, image) in enumerate(iter_frames(info, numbers)):
        frame = preprocess_frame(image, mode, target_size, model=model)
        if pixels is None:
            pixels = np.empty((len(numbers),) + frame.pixels.shape, dtype=np.uint8)
            size = frame.original_size
        elif frame.original_size != size or frame.pixels.shape != pixels.shape[1:]:
            raise RequestError(f"{info.path}: frame {number} is {frame.original_size[0]}x"
                               f"{frame.original_size[1]}, the shot's first frame {size[0]}x{size[1]}",
                               file=info.path)
        pixels[k] = frame.pixels
        maps.append(frame.pixel_map)
        boxes.append(frame.valid_box)
        if progress is not None:
            progress(k + 1, len(numbers))
        _check_cancel(should_cancel)
    assert pixels is not None
    return ShotFrames(info, numbers, pixels, size, np.asarray(maps, dtype=np.float64),
                      np.asarray(boxes, dtype=np.int32))


# ----------------------------------------------------------------------------------------- chunk sizing


def estimate_frame_bytes(config: Any, width: int, height: int, dtype: torch.dtype, fast: bool) -> float:
    """Activation memory one more frame adds to a pass (bytes), from the model's shape.

    The standard path keeps every aggregator layer's output (fp32, frame and global tokens concatenated)
    until the heads run; the fast path keeps only the layers the heads read, in bf16/fp16. While a block
    runs, one frame's tokens also need q/k/v, the MLP's hidden layer and residual copies (~12 C per token).
    The DPT heads run on 8 frames at a time, a fixed cost (see `estimate_fixed_bytes`).
    """
    tokens = (height // config.patch_size) * (width // config.patch_size) + 1 + config.num_register_tokens
    width_c = config.embed_dim
    act = torch.finfo(dtype).bits // 8
    head, _count = _dense_heads(config)
    kept_layers = len(head.intermediate_layer_idx) if fast else config.depth
    kept = kept_layers * 2 * width_c * tokens * (act if fast else 4)
    working = 12 * width_c * tokens * 4
    return float(kept + working + 64 * width * height)  # + the head's per-frame outputs


def _dense_heads(config: Any) -> tuple[Any, int]:
    """The dense (DPT) head's config and how many run: VGGT's depth and point heads, VGGT-Omega's one."""
    if getattr(config, "dpt_head", None) is not None:
        return config.dpt_head, 2
    return config.dense_head, 1


def estimate_fixed_bytes(config: Any, width: int, height: int, parameter_bytes: float) -> float:
    head, count = _dense_heads(config)
    heads = 8 * head.features * width * height * 4 * (count + 1)  # the DPT heads, 8 frames per step
    return float(parameter_bytes + heads)


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4e9


def plan_shot_chunks(count: int, device: torch.device, config: Any, width: int, height: int,
                     dtype: torch.dtype, fast: bool, parameter_bytes: float, chunk_size: int | None = None,
                     overlap: int = DEFAULT_OVERLAP) -> tuple[list[Chunk], dict]:
    """The chunks for `count` views and how their size was decided (for provenance)."""
    per_frame = estimate_frame_bytes(config, width, height, dtype, fast)
    fixed = estimate_fixed_bytes(config, width, height, parameter_bytes if device.type != "cpu" else 0.0)
    if chunk_size:
        size, source, free = int(chunk_size), "requested", None
    elif device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        size = choose_chunk_size(count, free, per_frame, fixed, overlap, safety=0.8)
        source = "cuda free memory"
    else:
        # The whole shot's outputs live in RAM beside the model's activations.
        free = _available_ram() - count * width * height * OUTPUT_BYTES_PER_PIXEL
        size = choose_chunk_size(count, max(free, 0.0), per_frame, fixed, overlap, safety=0.5,
                                 cap=CPU_CHUNK_CAP)
        source = f"{device.type} available memory (cap {CPU_CHUNK_CAP})"
    size = max(1, min(size, count))
    if not chunk_size:
        overlap = max(2, min(overlap, size // 3))  # small CPU chunks: keep most of each chunk new
    chunks = plan_chunks(count, size, overlap)
    info = {"chunk_size": size, "overlap": overlap if len(chunks) > 1 else 0, "sized_by": source,
            "free_bytes": None if free is None else int(free), "frame_bytes_estimate": int(per_frame),
            "fixed_bytes_estimate": int(fixed)}
    return chunks, info


# ------------------------------------------------------------------------------------------- the loop


def _run_chunk(model: Any, pixels: np.ndarray, device: torch.device, dtype: torch.dtype) -> dict:
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).float().div_(255.0)
    if not _inf._is_fast(model):  # the lean mode copies one chunk of frames at a time itself
        images = images.to(device)
    out = {"point_map": None, "point_map_conf": None,
           **_inf.outputs_as_numpy(_inf._forward(model, images, device, dtype))}
    del images
    return out


def reconstruct_shot(source: str | os.PathLike, selection: FrameSelection | None = None, *,
                     weights: str | None = None, device: str = "auto", precision: str = "auto",
                     mode: str = "crop", config: Any = "vggt-1b", progress=None, should_cancel=None,
                     model: Any = None, warn=None, fast_path: str = "auto", chunk_size: int | None = None,
                     overlap: int = DEFAULT_OVERLAP, fps: float | None = None, **_ignored: Any) -> Reconstruction:
    """Reconstruct the selected frames of a video file or an image sequence (see module docstring)."""
    report = progress or _inf._noop_progress
    selection = selection or FrameSelection()
    timings: dict[str, float] = {}
    torch_device = choose_device(device)
    dtype = choose_precision(torch_device, precision)
    device_text = describe_device(torch_device)
    model_name = _ignored.get("model_name")
    weights_path = (str(resolve_weights(weights, model_name or _inf.DEFAULT_CHECKPOINT))
                    if (model is None or weights is not None) else None)
    choice = _inf.choose_model(_inf.InferenceOptions(weights=weights, device=device, precision=precision, mode=mode,
                                                     config=config, fast_path=fast_path, model_name=model_name),
                               weights_path, model)
    model_config, config_name = choice.config, choice.config_name
    # The chunk alignment works from depth and cameras, so both families run shots; each has its own loader.
    mode, target_size = _inf.preprocess_settings(choice, mode)
    fast = _inf._is_fast(model) or _inf.use_fast_path(fast_path, torch_device, dtype)
    _check_cancel(should_cancel)

    start = time.perf_counter()
    info = probe_shot(os.fspath(source), fps)
    report("preprocessing", 0.0, f"{info.kind} {Path(info.path).name}: {info.frame_count} frames at "
           f"{float(info.fps):.3f} fps, {info.width}x{info.height}; {selection.describe()}")
    frames = decode_shot(info.path, selection, mode, target_size, fps=fps, info=info, should_cancel=should_cancel,
                         progress=lambda d, t: report("preprocessing", d / t, f"{d}/{t} frame(s)"),
                         model=choice.family)
    count = len(frames.numbers)
    height, width = frames.pixels.shape[1:3]
    timings["preprocessing"] = time.perf_counter() - start

    start = time.perf_counter()
    checkpoint_sha = None
    if model is None:
        report("loading", 0.0, f"{Path(weights_path).name} on {device_text}")
        try:
            model, checkpoint_sha, cached = _inf.load_cached_model(model_config, config_name, weights_path,
                                                                   torch_device, dtype, fast=fast)
        except BaseException as exc:
            if is_out_of_memory(exc):
                _inf.clear_model_cache()
                raise OutOfMemoryError(_inf._loading_oom_message(weights_path, device_text, fast,
                                                                 precision_name(dtype))) from None
            raise
        report("loading", 1.0, "cached model" if cached else "model loaded")
    else:
        if fast and not _inf._is_fast(model):
            import copy

            model = copy.deepcopy(model).to(torch_device)  # the caller's model is left as it is
            model.set_execution(_inf._lean_mode(torch_device, dtype))
        report("loading", 1.0, "model given")
    timings["loading"] = time.perf_counter() - start
    _check_cancel(should_cancel)

    start = time.perf_counter()
    module = getattr(model, "model", model)
    parameter_bytes = float(sum(p.numel() * p.element_size() for p in module.parameters())) \
        if hasattr(module, "parameters") else 0.0
    chunks, chunking = plan_shot_chunks(count, torch_device, model_config, width, height, dtype, fast,
                                        parameter_bytes, chunk_size, overlap)
    path_name = "fast" if fast else "standard"
    report("inference", 0.0, f"{count} frame(s) in {len(chunks)} chunk(s) of {chunking['chunk_size']} on "
           f"{device_text}, {precision_name(dtype)}, {path_name} path")

    # Long shots keep the point map (the one stored xyz primary) in a temporary file, not in RAM.
    shot = ShotAssembler(count, height, width, spool=count >= SPOOL_FROM_FRAMES, point_map=not choice.omega)
    for index, chunk in enumerate(chunks):
        try:
            out = _run_chunk(model, frames.pixels[chunk.start:chunk.end], torch_device, dtype)
        except BaseException as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"out of memory on {device_text} running a chunk of {chunk.size} frame(s) at {width}x"
                    f"{height}: use a smaller --chunk-size (this run had {chunking['chunk_size']})") from None
            raise
        finally:
            if torch_device.type != "cpu":
                _inf._free_memory()
        ext, k_model = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"], (height, width))
        ext = np.asarray(ext, dtype=np.float64).reshape(chunk.size, 3, 4)
        k_model = np.asarray(k_model, dtype=np.float64).reshape(chunk.size, 3, 3)
        try:
            shot.add(index, chunk.start, chunk.overlap, ext, k_model, out["depth"], out["depth_conf"],
                     out["point_map"], out["point_map_conf"])
        except ValueError as exc:  # e.g. no usable depth in the shared views
            raise RequestError(f"{info.path}: cannot align frames {frames.numbers[chunk.start]}.."
                               f"{frames.numbers[chunk.end - 1]} to the ones before ({exc})",
                               file=info.path) from None
        del out
        report("inference", (index + 1) / len(chunks), f"chunk {index + 1}/{len(chunks)}")
        _check_cancel(should_cancel)
    timings["inference"] = time.perf_counter() - start

    pixel_map = frames.pixel_map
    info_ = frames.info
    if info_.kind == "sequence":
        by_number = dict(zip(info_.frame_numbers, info_.files))
        paths = [by_number[n] for n in frames.numbers]
    else:
        paths = [info_.path] * count
    names = shot_view_names(Path(info_.path).name, frames.numbers)
    provenance = make_provenance(
        checkpoint=Path(weights_path).name if weights_path else None, checkpoint_sha256=checkpoint_sha,
        mode=mode, precision=precision_name(dtype), device=device_text,
        timings={k: round(v, 4) for k, v in timings.items()},
        checkpoint_path=str(Path(weights_path).resolve()) if weights_path else None, config=config_name,
        torch_version=torch.__version__, path=path_name, model_family=choice.family, model=choice.model_name,
        shot={"source": info_.summary(), "selection": selection.to_request(), "frames": count,
              "chunking": chunking, "chunks": [[c.start, c.end, c.overlap] for c in chunks],
              "alignment": [r.to_dict() for r in shot.reports]},
    )
    point_map = shot.point_map_array()
    # Primaries only: world_points, intrinsics (photo) and valid_mask follow from them (geometry/derive.py).
    rec = Reconstruction(
        image_paths=paths, display_paths=paths, image_names=names,
        original_sizes=np.tile(np.asarray(frames.original_size, dtype=np.int32), (count, 1)),
        model_size=np.asarray((width, height), dtype=np.int32), pixel_map=pixel_map,
        valid_box=frames.valid_box, extrinsics=shot.extrinsics,
        intrinsics_model=shot.intrinsics_model, depth=shot.depth, depth_conf=shot.depth_conf,
        point_map=point_map, point_map_conf=shot.point_map_conf,
        colors=frames.pixels, provenance=provenance,
        extra=shot_extra(frames.numbers, info_.fps.numerator, info_.fps.denominator, info_.path, info_.kind,
                         (info_.width, info_.height), info_.frame_count, info_.first_file_number),
    )
    if shot.spools:
        import weakref

        # The spool file lives as long as the map of it (which every copy of `rec` shares);
        # save_reconstruction writes it piece by piece (io/spool.py).
        weakref.finalize(point_map, lambda spools=tuple(shot.spools.values()): [s.close() for s in spools])
    return rec


def shot_request(request: dict) -> tuple[FrameSelection, dict]:
    """For the worker: (FrameSelection, the other shot keyword arguments) from a request's optional
    SHOT_REQUEST_FIELDS. A worker calls `reconstruct_shot(request["inputs"][0], selection, **photo_options,
    **shot_options)` or passes them through `reconstruct_to_file` (which routes shots here)."""
    selection = FrameSelection.from_request(request)
    options = {}
    for key in ("chunk_size", "overlap"):
        if request.get(key) is not None:
            options[key] = int(request[key])
    if request.get("fps") is not None:
        options["fps"] = float(request["fps"])
    return selection, options

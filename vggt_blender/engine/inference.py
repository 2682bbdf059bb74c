"""Photos -> Reconstruction: collect and preprocess the images, run VGGT, decode cameras, build the file's arrays.

`reconstruct()` returns the in-memory Reconstruction; `reconstruct_to_file()` also writes the .npz (atomically) and
the upright copies of EXIF-rotated photos, and removes what it created when it fails or is cancelled.

Two execution modes of the one model give the same outputs: "standard" (`VGGT.forward`, under autocast for
bf16/fp16) and "fast" (the lean `ExecutionMode` of model/execution.py: bf16/fp16 aggregator weights, only the
layers the heads read kept, chunked token-wise work, heads per chunk of frames, images copied to the device per
chunk). `fast_path="auto"` picks the fast one on CUDA in bf16/fp16,
where the standard path's fp32 tokens run out of memory past a few hundred photos.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .devices import (choose_device, choose_precision, describe_device, is_out_of_memory, precision_name,
                      uses_autocast)
from ..errors import CancelledError, CheckpointError, OutOfMemoryError, RequestError
from ..geometry.cameras import pose_encoding_to_extrinsics_intrinsics
from ..io.output_paths import RunFolder, display_folder_for, resolve_output
from ..io.photo_paths import collect_images
from ..io.reconstruction import Reconstruction, make_provenance, save_reconstruction
from ..model.execution import ExecutionMode, is_lean
from ..model.quantization import is_int8, quantize_aggregator_int8
from ..options import FAST_PATH_CHOICES, InferenceOptions
from ..preprocess import load_image, preprocess_images
from ..weights.discovery import resolve_weights, sha256_file
from ..weights.registry import DEFAULT_CHECKPOINT
from ..weights.loading import load_model

ProgressCallback = Callable[[str, float, str], None]
CancelCheck = Callable[[], bool]
WarningCallback = Callable[[str], None]

STAGES = ("preprocessing", "loading", "inference", "writing")  # in the order they run


@dataclass
class _CachedModel:
    key: tuple
    model: Any  # a VGGT (its execution mode: plain for the standard path, lean for the fast one)
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


@dataclass
class ModelChoice:
    """Which model a run uses, decided before preprocessing (the loader depends on the family)."""

    config: Any        # VGGTConfig or VGGTOmegaConfig
    config_name: str   # for provenance: a preset name, a JSON file's path or "custom"
    family: str        # "vggt" or "vggt-omega"
    model_name: str | None = None  # the registry name when one was chosen (--model), else None

    @property
    def omega(self) -> bool:
        return self.family == "vggt-omega"


def _config_label(config: Any) -> str:
    if not isinstance(config, (str, Path)):
        return "custom"
    text = str(config)
    path = Path(text).expanduser()
    return str(path.resolve()) if text.lower().endswith(".json") or path.exists() else text


def choose_model(options: InferenceOptions, weights_path: str | None, model: Any = None) -> ModelChoice:
    """The config and family of a run, from (in this order) an explicit `config`, the registry `model_name` (its
    preset), the given model object, or the checkpoint's keys (its family's published configuration).

    A `config` of the other family than `model` is a RequestError; a checkpoint of the other family than the
    config is reported by loading (weights/loading.py), a file that is no checkpoint (or a damaged one) by
    reading its keys here, before any photo is preprocessed."""
    from ..model.family import FAMILY_NAMES, default_config, detect_family, family_of_config, resolve_config
    from ..weights.registry import get_checkpoint

    entry = get_checkpoint(options.model_name) if options.model_name else None
    if options.config is not None:
        config, name = resolve_config(options.config), _config_label(options.config)
        family = family_of_config(config)
        if entry is not None and entry.family != family:
            raise RequestError(f"--config {name} is a {FAMILY_NAMES[family]} configuration, but the model "
                               f"{entry.name} is {FAMILY_NAMES[entry.family]}; leave --config out or choose a "
                               f"{FAMILY_NAMES[family]} model")
        return ModelChoice(config, name, family, entry.name if entry else None)
    if entry is not None:
        config = resolve_config(entry.config)
        return ModelChoice(config, entry.config, family_of_config(config), entry.name)
    if model is not None and getattr(model, "config", None) is not None:
        return ModelChoice(model.config, "custom", family_of_config(model.config))
    if weights_path is None:
        config = resolve_config("vggt-1b")
        return ModelChoice(config, "vggt-1b", "vggt")
    keys = checkpoint_keys(weights_path)
    family = detect_family(keys)
    if family is None:
        raise CheckpointError(f"{weights_path}: not a VGGT or VGGT-Omega checkpoint (none of its "
                              f"{len(keys)} keys is one of either model's)", file=weights_path)
    config = default_config(family, keys)
    name = ("vggt-omega-1b-256-text" if config.text_alignment_head is not None else "vggt-omega-1b-512") \
        if family == "vggt-omega" else "vggt-1b"
    return ModelChoice(config, name, family)


def checkpoint_keys(weights_path: str) -> list[str]:
    """The tensor names of a checkpoint (read memory-mapped: the weights themselves are not paged in). A file
    that is not a readable checkpoint raises CheckpointError naming it."""
    from ..weights.loading import _unwrap, read_state_dict

    if Path(weights_path).suffix.lower() == ".safetensors":
        # The header alone names the tensors (load_file would read all 5 GB); anything wrong with the file is
        # then worded by read_state_dict below.
        try:
            from safetensors import safe_open

            with safe_open(weights_path, framework="pt") as handle:
                return list(_unwrap({key: None for key in handle.keys()}))
        except Exception:  # noqa: BLE001 - SafetensorError, OSError, ...
            pass
    state = read_state_dict(weights_path, map_location="cpu")  # zip files: memory-mapped
    keys = list(state)
    del state
    return keys


# VGGT-Omega's input size: 512 px, 256 for the text-aligned checkpoint (VGGT_OMEGA_SPEC §2).
OMEGA_TEXT_TARGET_SIZE = 256


def preprocess_settings(choice: ModelChoice, mode: str) -> tuple[str, int | None]:
    """(loader mode, target size) for the family: a VGGT mode given to VGGT-Omega maps to its counterpart
    (options.V1_TO_OMEGA_MODE); a VGGT-Omega mode given to VGGT is a RequestError."""
    from ..options import OMEGA_MODES, V1_TO_OMEGA_MODE

    if choice.omega:
        size = OMEGA_TEXT_TARGET_SIZE if getattr(choice.config, "text_alignment_head", None) is not None else None
        return V1_TO_OMEGA_MODE.get(mode, mode), size
    if mode in OMEGA_MODES:
        raise RequestError(f"mode '{mode}' is a VGGT-Omega loader mode, but this run uses VGGT; choose crop or "
                           f"pad (or a VGGT-Omega model)")
    return mode, None


class Stages:
    """The pipeline's bookkeeping, said once: each stage reports its start, is timed, and is followed by a
    cancel check; `step` reports progress inside a stage and checks for a cancel too."""

    def __init__(self, report: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.report = report or _noop_progress
        self.should_cancel = should_cancel
        self.timings: dict[str, float] = {}

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise CancelledError("cancelled by the user")

    def step(self, stage: str, fraction: float, message: str) -> None:
        self.report(stage, fraction, message)
        self.check_cancel()

    @contextlib.contextmanager
    def stage(self, name: str, start_message: str | None = None) -> Iterator[None]:
        """Time the block as stage `name` (reporting fraction 0 with `start_message` when given); a cancel
        requested meanwhile is raised when it ends."""
        start = time.perf_counter()
        if start_message is not None:
            self.report(name, 0.0, start_message)
        yield
        self.timings[name] = time.perf_counter() - start
        self.check_cancel()


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
    """(model, checkpoint sha256, was_cached): reuse the cached one when the key matches."""
    global _MODEL_CACHE
    key = (str(Path(weights_path).resolve()), config_name, str(device), str(dtype), "fast" if fast else "standard")
    if _MODEL_CACHE is not None and _MODEL_CACHE.key == key:
        return _MODEL_CACHE.model, _MODEL_CACHE.checkpoint_sha256, True
    # Drop the old model before loading a new one: two 5 GB models rarely fit together.
    clear_model_cache()
    if fast:
        # Straight to the device tensor by tensor: aggregator matrices in `dtype`, heads fp32; never an fp32
        # copy of the aggregator on the GPU.
        model = load_model(config, weights_path, device, execution=_lean_mode(device, dtype))
    else:
        # Weights stay fp32: reduced precision comes from autocast, and the heads run in fp32 by design.
        model = load_model(config, weights_path, device, torch.float32)
        model.eval()
    if dtype is torch.qint8:
        quantize_aggregator_int8(model)
    digest = sha256_file(weights_path)
    _MODEL_CACHE = _CachedModel(key, model, digest)
    return model, digest, False


def _forward(model: Any, images: torch.Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """The bare model call on either path (the worker's fault hook replaces this in tests)."""
    if _is_fast(model):
        with torch.inference_mode():
            return model(images)  # its own dtypes; images may be on the host
    if uses_autocast(device, dtype):
        autocast = torch.autocast(device_type=device.type, dtype=dtype)
    else:
        autocast = contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return model(images)


def _lean_mode(device: torch.device, dtype: torch.dtype) -> ExecutionMode:
    # int8 keeps float32 activations: its lean mode chunks the work without casting anything.
    return ExecutionMode.lean_for(device, torch.float32 if dtype is torch.qint8 else dtype)


def _is_fast(model: Any) -> bool:
    return is_lean(getattr(model, "execution", None))


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
    # VGGT's global blocks, VGGT-Omega's inter-frame blocks: one of each per layer.
    blocks = getattr(aggregator, "global_blocks", None) or getattr(aggregator, "inter_frame_blocks", None)
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


def _display_copies(paths: Sequence[str], rotated: Sequence[bool], folder: Path | RunFolder | None,
                    report: ProgressCallback = _noop_progress) -> list[str]:
    """Display paths: the source, or an upright JPEG copy (quality 95, written into `folder`) for EXIF-rotated
    photos. A RunFolder is written under its temporary name and named by its final one (published later by
    `reconstruct_to_file`). Progress goes to the "writing" stage (its first half)."""
    display = [str(p) for p in paths]
    todo = [i for i, r in enumerate(rotated) if r]
    if folder is None or not todo:
        return display
    final = folder.final if isinstance(folder, RunFolder) else folder
    try:
        if isinstance(folder, RunFolder):
            write_dir = folder.staging_dir()
        else:
            folder.mkdir(parents=True, exist_ok=True)
            write_dir = folder
    except OSError as exc:
        raise RequestError(f"{final}: cannot create the folder for upright copies of rotated photos: "
                           f"{exc.strerror or exc}", file=str(final)) from exc
    used: set[str] = set()
    report("writing", 0.0, f"upright copies of {len(todo)} rotated photo(s)")
    for done, index in enumerate(todo, start=1):
        name = f"{_unique_stem(Path(paths[index]).stem, used)}.jpg"
        target = write_dir / name
        try:
            load_image(str(paths[index])).save(target, format="JPEG", quality=UPRIGHT_JPEG_QUALITY)
        except OSError as exc:
            raise RequestError(f"{final / name}: cannot write the upright copy of {paths[index]}: "
                               f"{exc.strerror or exc}", file=str(final / name)) from exc
        display[index] = str((final / name).absolute())
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


@dataclass
class _Run:
    """What the stages of one run hand on to each other."""

    options: InferenceOptions
    device: torch.device
    dtype: torch.dtype
    device_text: str
    fast: bool
    weights_path: str | None
    choice: ModelChoice
    mode: str  # the loader mode actually used (a VGGT mode maps to VGGT-Omega's counterpart)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    @property
    def path_name(self) -> str:
        return "fast" if self.fast else "standard"


def reconstruct(image_paths: Iterable[str], options: InferenceOptions | None = None, *,
                progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                model: Any = None, warn: WarningCallback | None = None,
                display_dir: str | Path | RunFolder | None = None, **option_values: Any) -> Reconstruction:
    """Run VGGT on photos (files or folders) and return a Reconstruction.

    `options` (InferenceOptions: weights, device, precision, mode, config, fast_path) say how; keyword
    values of the same names override single fields (`reconstruct(paths, device="cpu")`).
    `model` skips loading (its weights are then unknown to provenance unless `weights` is given too); a
    model set to a lean execution mode always runs the fast path, a plain one given with the fast path chosen
    is switched to the lean mode on a copy (the caller's model is left as it is).
    `display_dir`: where upright copies of EXIF-rotated photos go (none are written without it).
    `fast_path`: "auto" (fast on CUDA with bf16/fp16, standard otherwise), "on" (any device, CPU included)
    or "off" (always `VGGT.forward`).
    """
    opts = replace(options or InferenceOptions(), **option_values)  # an unknown name is a TypeError
    stages = Stages(progress, should_cancel)
    paths, warnings = collect_images([str(p) for p in image_paths])  # raises when there are no images
    for line in warnings:
        if warn is not None:
            warn(line)

    device = choose_device(opts.device)
    dtype = choose_precision(device, opts.precision)
    checkpoint = opts.model_name or DEFAULT_CHECKPOINT
    weights_path = (str(resolve_weights(opts.weights, checkpoint)) if model is None or opts.weights is not None
                    else None)
    choice = choose_model(opts, weights_path, model)
    mode, target_size = preprocess_settings(choice, opts.mode)
    model_config, config_name = choice.config, choice.config_name
    run = _Run(opts, device, dtype, describe_device(device),
               fast=_is_fast(model) or use_fast_path(opts.fast_path, device, dtype),
               weights_path=weights_path, choice=choice, mode=mode)
    stages.check_cancel()

    with stages.stage("preprocessing", f"{len(paths)} image(s), {mode}"):
        prep = preprocess_images(list(paths), mode, target_size, model=choice.family,
                                 progress=lambda done, total: stages.step("preprocessing", done / total,
                                                                          f"{done}/{total} image(s)"))
        for note in prep.notes:
            if warn is not None:
                warn(note)
        stages.report("preprocessing", 1.0, f"{len(paths)} image(s) at {prep.model_size[0]}x{prep.model_size[1]}")

    checkpoint_sha = None
    with stages.stage("loading", None if model is not None else
                      f"{Path(run.weights_path).name} on {run.device_text}"):
        if model is None:
            model, checkpoint_sha, cached = _load(run, model_config, config_name)
            stages.report("loading", 1.0, "cached model" if cached else "model loaded")
        else:
            if (run.fast and not _is_fast(model)) or (dtype is torch.qint8 and not is_int8(model)):
                model = copy.deepcopy(model).to(device)  # the caller's model is left as it is
                if run.fast and not _is_fast(model):
                    model.set_execution(_lean_mode(device, dtype))
                if dtype is torch.qint8 and not is_int8(model):
                    quantize_aggregator_int8(model)
            stages.report("loading", 1.0, "model given")

    count = len(paths)
    with stages.stage("inference", f"{count} image(s) on {run.device_text}, {run.precision}, "
                                   f"{run.path_name} path"):
        outputs = _infer(run, model, prep, stages)
        stages.report("inference", 1.0, f"{count} image(s)")

    return _assemble(run, prep, outputs, stages, config_name, checkpoint_sha, display_dir)


def _load(run: _Run, model_config: Any, config_name: str) -> tuple[Any, str, bool]:
    """The (cached) model for this run; running out of memory while loading says what to change."""
    try:
        return load_cached_model(model_config, config_name, run.weights_path, run.device, run.dtype, fast=run.fast)
    except BaseException as exc:
        if is_out_of_memory(exc):
            clear_model_cache()
            raise OutOfMemoryError(_loading_oom_message(run.weights_path, run.device_text, run.fast,
                                                        run.precision)) from None
        raise


def outputs_as_numpy(outputs: dict) -> dict[str, np.ndarray]:
    """The model's outputs for image batch 0 as numpy: pose encoding (float64), depth [S, H, W], its confidence
    and, for VGGT (VGGT-Omega has no point head, and its file no point map), the point map and its confidence."""
    result = {
        "pose_enc": _as_numpy(outputs["pose_enc"])[0].astype(np.float64),
        "depth": _as_numpy(outputs["depth"])[0, ..., 0],
        "depth_conf": _as_numpy(outputs["depth_conf"])[0],
    }
    if "world_points" in outputs:
        result["point_map"] = _as_numpy(outputs["world_points"])[0]
        result["point_map_conf"] = _as_numpy(outputs["world_points_conf"])[0]
    return result


def _infer(run: _Run, model: Any, prep: Any, stages: Stages) -> dict[str, np.ndarray]:
    """The forward pass with progress per aggregator block; returns the outputs for image batch 0 as numpy."""
    count = len(prep.paths)
    width, height = int(prep.model_size[0]), int(prep.model_size[1])

    def block_done(fraction: float) -> None:
        stages.step("inference", fraction, f"{count} image(s)")

    hooks = _block_progress_hooks(model, block_done)
    # The fast path leaves the images on the host: it copies one chunk of frames at a time.
    images = prep.images if _is_fast(model) else prep.images.to(run.device, dtype=torch.float32)
    try:
        result = outputs_as_numpy(_forward(model, images, run.device, run.dtype))
    except BaseException as exc:
        if is_out_of_memory(exc):
            raise OutOfMemoryError(_oom_message(count, (width, height), run.mode, run.precision,
                                                run.device_text, run.path_name)) from None
        raise
    finally:
        for handle in hooks:
            handle.remove()
        del images
        if run.device.type != "cpu":
            _free_memory()
    return result


def _assemble(run: _Run, prep: Any, outputs: dict[str, np.ndarray], stages: Stages, config_name: str,
              checkpoint_sha: str | None, display_dir: str | Path | RunFolder | None) -> Reconstruction:
    """The Reconstruction from the model outputs: cameras decoded, upright copies written, provenance."""
    count = len(prep.paths)
    width, height = int(prep.model_size[0]), int(prep.model_size[1])
    extrinsics, intrinsics_model = pose_encoding_to_extrinsics_intrinsics(outputs["pose_enc"], (height, width))
    # world_points, intrinsics (photo) and valid_mask follow from the primaries (geometry/derive.py).
    source_paths = list(prep.paths)  # already absolute and resolved (io/photo_paths.collect_images)
    display_paths = _display_copies(source_paths, list(prep.rotated),
                                    display_dir if display_dir is None or isinstance(display_dir, RunFolder)
                                    else Path(display_dir), stages.report)
    weights_path = run.weights_path
    provenance = make_provenance(
        checkpoint=Path(weights_path).name if weights_path else None,
        checkpoint_sha256=checkpoint_sha,
        mode=run.mode,
        precision=run.precision,
        device=run.device_text,
        timings={k: round(v, 4) for k, v in stages.timings.items()},
        checkpoint_path=str(Path(weights_path).resolve()) if weights_path else None,
        config=config_name,
        torch_version=torch.__version__,
        path=run.path_name,
        model_family=run.choice.family,
        model=run.choice.model_name,
    )
    return Reconstruction(
        image_paths=source_paths,
        display_paths=display_paths,
        image_names=[Path(p).stem for p in source_paths],
        original_sizes=np.asarray(prep.original_sizes, dtype=np.int32),
        model_size=np.asarray(prep.model_size, dtype=np.int32),
        pixel_map=np.asarray(prep.pixel_map, dtype=np.float64),
        valid_box=np.asarray(prep.valid_box, dtype=np.int32),
        extrinsics=np.asarray(extrinsics, dtype=np.float64).reshape(count, 3, 4),
        intrinsics_model=np.asarray(intrinsics_model, dtype=np.float64).reshape(count, 3, 3),
        depth=outputs["depth"].astype(np.float32),
        depth_conf=outputs["depth_conf"].astype(np.float32),
        point_map=outputs["point_map"].astype(np.float32) if "point_map" in outputs else None,
        point_map_conf=outputs["point_map_conf"].astype(np.float32) if "point_map_conf" in outputs else None,
        colors=prep.colors,
        provenance=provenance,
    )


def probe_output_folder(output: Path) -> None:
    """Create and remove a temporary file beside `output`, so an unwritable folder is reported before the
    model runs rather than after it."""
    import os
    import tempfile

    from ..io.atomic import own_temp_prefix

    folder = output.parent
    try:
        fd, name = tempfile.mkstemp(prefix=own_temp_prefix(), suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise RequestError(f"{folder}: cannot write to the output folder: {exc.strerror or exc}",
                           file=str(output)) from exc


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def reconstruct_to_file(image_paths: Iterable[str], output: str | Path, *,
                        progress: ProgressCallback | None = None, compress: bool = False,
                        **options: Any) -> Reconstruction:
    """`reconstruct()` (options passed on, `fast_path` included) then write the .npz atomically. Everything the
    run writes appears together or not at all: the upright copies go to a folder of this run's own
    (io/output_paths.RunFolder), published just before the .npz is swapped in. On any failure (cancel
    included) nothing of this run is left behind: no output file, no copies, no output folder it created.
    `compress`: zip deflate (lossless; see save_reconstruction). Returns the Reconstruction."""
    output = resolve_output(output)
    made = _missing_folders(output.parent)
    try:  # a pipeline naming a fresh output folder expects it to be made
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RequestError(f"{output.parent}: cannot create the output folder ({exc.strerror or exc})",
                           file=str(output)) from exc
    report = progress or _noop_progress
    run_folder = RunFolder(display_folder_for(output))
    done = False
    try:
        probe_output_folder(output)
        rec = _reconstruct_photos_or_shot(image_paths, report, run_folder, options)
        start = time.perf_counter()
        copies = any(d != i for d, i in zip(rec.display_paths, rec.image_paths))
        report("writing", 0.5 if copies else 0.0, str(output))
        try:
            run_folder.publish()
        except OSError as exc:
            raise RequestError(f"{run_folder.final}: cannot name the folder of upright copies: "
                               f"{exc.strerror or exc}", file=str(run_folder.final)) from exc
        # Long shots are compressed and every shot is streamed (save_reconstruction decides); `compress` forces it.
        save_reconstruction(str(output), rec, compress=True if compress else None)
        elapsed = time.perf_counter() - start
        report("writing", 1.0, str(output))
        _set_timing(rec, "writing", elapsed)  # in memory only: the file is already written
        done = True
        return rec
    finally:
        if not done:
            run_folder.discard()
            for folder in made:  # innermost first; a folder someone else has put files in stays
                with contextlib.suppress(OSError):
                    folder.rmdir()


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


def _reconstruct_photos_or_shot(image_paths: Iterable[str], report: ProgressCallback, folder: Path,
                                options: dict) -> Reconstruction:
    from ..shot.selection import shot_input_kind

    inputs = [str(p) for p in image_paths]
    shot = {k: options.pop(k) for k in SHOT_OPTIONS if k in options}
    if shot_input_kind(inputs, shot) is None:  # photos (frame options with them are refused there)
        return reconstruct(inputs, progress=report, display_dir=folder, **options)
    shot.pop("sequence", None)
    from .shot import reconstruct_shot, shot_request

    selection, shot_options = shot_request(shot)
    return reconstruct_shot(inputs[0], selection, progress=report, **options, **shot_options)

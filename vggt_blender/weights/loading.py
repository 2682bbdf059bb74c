"""Reading checkpoint files into state dicts and loading them into a model (torch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import CheckpointError
from .discovery import checkpoint_format

if TYPE_CHECKING:  # pragma: no cover
    import torch


# -------------------------------------------------------------------------------------- state dicts


def _unwrap(obj: Any) -> Any:
    """Training checkpoints wrap the weights ({"model": sd, "optimizer": ...}); DDP prefixes 'module.'."""
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | os.PathLike[str], map_location: str | Any = "cpu") -> dict[str, "torch.Tensor"]:
    """Read a state dict from .pt/.pth/.bin (torch.save) or .safetensors without running pickled code.

    torch files load with weights_only=True (only tensors and plain containers) and mmap=True (a 5 GB file
    is paged in, not copied). Anything else — truncated files, foreign pickles, non-dicts — raises
    CheckpointError naming the file.
    """
    import torch

    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise CheckpointError(f"{file}: checkpoint file not found", file=file)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{file}: the checkpoint file is empty (an interrupted download?)", file=file)
    try:
        kind = checkpoint_format(path)  # the same sniffing the downloader uses
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot open the checkpoint: {exc.strerror or exc}", file=file) from exc
    if kind == "safetensors" or (kind == "unknown" and path.suffix == ".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{file}: cannot read this safetensors file; it is truncated or corrupted "
                                  f"({exc}). Download it again.", file=file) from exc
    elif kind in ("zip", "pickle"):
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=(kind == "zip"))
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/EOFError/...
            text = str(exc)
            if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
                raise CheckpointError(
                    f"{file}: refused to load: the file contains Python objects, not just tensors, and is not "
                    f"unpickled for safety. Use an official VGGT checkpoint (a plain state dict).", file=file) from exc
            raise CheckpointError(f"{file}: cannot read this checkpoint; it is truncated or corrupted "
                                  f"({text.splitlines()[0] if text else type(exc).__name__}). "
                                  f"Download it again.", file=file) from exc
    else:
        raise CheckpointError(f"{file}: not a PyTorch or safetensors checkpoint (unrecognised file contents)",
                              file=file)
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{file}: not a state dict (the file holds a {type(obj).__name__})", file=file)
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{file}: not a state dict: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} "
                              f"are not tensors (e.g. {bad[0]!r})", file=file)
    return dict(obj)


def _first(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(sd: Any, expected: Mapping[str, Sequence[int]], file: str | None = None,
                     model_name: str = "VGGT") -> None:
    """Compare a state dict with the model's key -> shape table; raise CheckpointError saying what differs."""
    import torch

    where = f"{file}: " if file else ""
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}not a state dict (expected a mapping of names to tensors)", file=file)
    keys = set(sd)
    want = {k: tuple(int(d) for d in s) for k, s in expected.items()}
    if not keys & set(want):
        some = _first(sorted(keys)) if keys else "none"
        raise CheckpointError(f"{where}no {model_name} keys: this looks like another model's checkpoint "
                              f"(its keys: {some})", file=file)
    missing = sorted(set(want) - keys)
    unexpected = sorted(keys - set(want))
    mismatched = sorted(k for k in keys & set(want) if tuple(sd[k].shape) != want[k])
    problems = []
    if mismatched:
        detail = "; ".join(f"{k}: checkpoint {list(sd[k].shape)} vs model {list(want[k])}" for k in mismatched[:3])
        more = f"; ... ({len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        problems.append(f"{len(mismatched)} shape mismatch{'es' if len(mismatched) != 1 else ''} ({detail}{more})"
                        " - a checkpoint for another model configuration?")
    if missing:
        problems.append(f"{len(missing)} missing key{'s' if len(missing) != 1 else ''} ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' if len(unexpected) != 1 else ''} "
                        f"({_first(unexpected)})")
    if problems:
        raise CheckpointError(f"{where}checkpoint does not match the {model_name} model: " + "; ".join(problems),
                              file=file)


# ------------------------------------------------------------------------------------------- loading


def build_on_meta(config: Any, **flags: Any) -> "torch.nn.Module":
    """VGGT or VGGT-Omega for `config` with every parameter and buffer on the meta device: no memory, no random
    init; an assign-load of a state dict then replaces them all (VGGT-Omega's buffers are in its state dict).
    `flags` go to VGGT (enable_track=False, ...); VGGT-Omega has none of them.
    """
    import torch

    from ..model.family import build_model

    with torch.device("meta"):
        return build_model(_resolve_config(config), **flags)


def _resolve_config(config: Any) -> Any:
    from ..model.family import resolve_config

    return resolve_config(config)  # the one preset-or-file lookup, for either model family


def _check_values(key: str, tensor: "torch.Tensor", converted: "torch.Tensor", where: str) -> None:
    """Refuse NaN/Inf weights (a "successful" run of NaN cameras otherwise), naming the first bad tensor."""
    import torch

    if bool(torch.isfinite(converted).all()):
        return
    if bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{where}: weight {key!r} does not fit in {str(converted.dtype).replace('torch.', '')} "
                              "(values overflow to infinity); use a wider precision", file=where)
    raise CheckpointError(f"{where}: weight {key!r} holds NaN or infinite values; the checkpoint is damaged. "
                          "Download it again.", file=where)


def load_model(config: Any, path: str | os.PathLike[str], device: Any = "cpu", dtype: Any = None,
               execution: Any = None, enable_track: bool = True) -> "torch.nn.Module":
    """Build VGGT or VGGT-Omega for `config` and load the checkpoint at `path` straight onto `device`.

    `config`: a VGGTConfig or VGGTOmegaConfig, a preset name ("vggt-1b", "vggt-omega-1b-512", ...), a
    config.json path, a dict, or None: then the model family (and the Omega text head) is recognised from the
    checkpoint's keys and its published configuration is used. The rest is `model_from_state_dict`'s (the
    checkpoint is read memory-mapped, see `read_state_dict`).
    """
    sd = read_state_dict(path, map_location="cpu")
    return model_from_state_dict(config, sd, device, dtype, execution, enable_track, file=str(path))


def model_from_state_dict(config: Any, sd: dict[str, "torch.Tensor"], device: Any = "cpu", dtype: Any = None,
                          execution: Any = None, enable_track: bool = True,
                          file: str | None = None) -> "torch.nn.Module":
    """VGGT or VGGT-Omega for `config` (None: recognised from the keys) holding the tensors of `sd` (emptied as
    it goes: pass a copy to keep it). A checkpoint of the other family than the requested config fails with a
    message saying so.

    Parameters are created on the meta device and replaced by the state dict's tensors
    (load_state_dict(assign=True)), so no random weights are ever allocated; each tensor is converted on its
    way to `device`. `dtype` (default float32) applies to every parameter, except that with a lean
    `execution` (model/execution.py) the aggregator's matrices go to the device directly in the mode's dtype
    (never an fp32 copy of them on a GPU), and the mode is set on the model. Every key of the official layout
    must be there (track-head keys are dropped when `enable_track` is False) with floating-point, finite
    values; problems are CheckpointErrors naming `file`. The model is returned in eval mode without gradients.
    """
    import torch

    from ..model.execution import lean_parameter_names
    from ..model.family import FAMILY_NAMES, default_config, detect_family, family_mismatch, family_of_config

    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device)
    where = file or "state dict"
    if config is None:
        family = detect_family(sd)
        if family is None:
            raise CheckpointError(f"{where}: not a VGGT or VGGT-Omega checkpoint (its keys: "
                                  f"{_first(sorted(sd)) if sd else 'none'})", file=file)
        cfg = default_config(family, sd)
    else:
        cfg = _resolve_config(config)
    mismatch = family_mismatch(sd, cfg)
    if mismatch:
        raise CheckpointError(f"{where}: {mismatch}", file=file)
    model = build_on_meta(cfg, enable_track=enable_track)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not enable_track:
        for key in [k for k in sd if k.startswith("track_head.")]:
            del sd[key]
    check_state_dict(sd, expected, file=file, model_name=FAMILY_NAMES[family_of_config(cfg)])
    not_float = [k for k in sd if not sd[k].is_floating_point()]
    if not_float:
        key = not_float[0]
        raise CheckpointError(f"{where}: weight {key!r} holds {str(sd[key].dtype).replace('torch.', '')} values "
                              f"where the model needs floating-point weights ({len(not_float)} such tensor"
                              f"{'s' if len(not_float) != 1 else ''}); not a usable checkpoint", file=file)
    low = lean_parameter_names(model) if execution is not None and execution.lean else set()
    for key in list(sd):
        tensor = sd[key]
        converted = tensor.to(device=device, dtype=execution.dtype if key in low else dtype)
        _check_values(key, tensor, converted, where)
        sd[key] = converted
        del tensor, converted
    model.load_state_dict(sd, strict=True, assign=True)
    sd.clear()
    leftover = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if leftover:
        raise CheckpointError(f"{where}: not loaded: {_first(leftover)}", file=file)
    model.eval()
    model.requires_grad_(False)
    if execution is not None:
        model.set_execution(execution)
    return model


__all__ = ["read_state_dict", "check_state_dict", "build_on_meta", "load_model", "model_from_state_dict"]

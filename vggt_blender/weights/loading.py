"""Reading checkpoint files into state dicts and loading them into a model (torch)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch


# -------------------------------------------------------------------------------------- state dicts


def _file_kind(path: Path) -> str:
    """'zip' (torch.save), 'safetensors', 'pickle' (legacy torch.save) or 'unknown', from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker
        return "pickle"
    return "unknown"


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
        kind = _file_kind(path)
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


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """While building a module, put every parameter on the meta device (no memory, no random init cost)
    but keep buffers real: non-persistent buffers (ImageNet mean/std) are not in the checkpoint, so they
    must keep the values the constructor computed."""
    import torch

    original = torch.nn.Module.register_parameter

    def register_on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def _resolve_config(config: Any) -> Any:
    from ..model.family import resolve_config

    return resolve_config(config)  # the one preset-or-file lookup, for either model family


def load_model(config: Any, path: str | os.PathLike[str], device: Any = "cpu", dtype: Any = None) -> "torch.nn.Module":
    """Build VGGT or VGGT-Omega for `config` and load the checkpoint at `path` straight onto `device` in `dtype`.

    `config`: a VGGTConfig or VGGTOmegaConfig, a preset name ("vggt-1b", "vggt-omega-1b-512", ...), a
    config.json path, a dict, or None: then the model family (and the Omega text head) is recognised from
    the checkpoint's keys and its published configuration is used. A checkpoint of the other family than
    the requested config fails with a message saying so. Parameters are created
    on the meta device and replaced by the checkpoint's tensors (load_state_dict(assign=True)), so no random
    weights are ever allocated; each tensor is converted on its way to the device. `dtype` (default float32)
    applies to floating-point parameters and buffers. The model is returned in eval mode without gradients.
    """
    import torch

    from ..model.family import FAMILY_NAMES, build_model, default_config, detect_family, family_mismatch
    from ..model.family import family_of_config

    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device)
    cfg = None if config is None else _resolve_config(config)
    sd = read_state_dict(path, map_location="cpu")
    if cfg is None:
        family = detect_family(sd)
        if family is None:
            raise CheckpointError(f"{path}: not a VGGT or VGGT-Omega checkpoint (its keys: "
                                  f"{_first(sorted(sd)) if sd else 'none'})", file=str(path))
        cfg = default_config(family, sd)
    mismatch = family_mismatch(sd, cfg)
    if mismatch:
        raise CheckpointError(f"{path}: {mismatch}", file=str(path))
    with _parameters_on_meta():
        model = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(sd, expected, file=str(path), model_name=FAMILY_NAMES[family_of_config(cfg)])
    for key in list(sd):
        tensor = sd[key]
        sd[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    model.load_state_dict(sd, strict=True, assign=True)
    del sd
    # Buffers were built on the CPU by the constructor; bring them along.
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            if buf.device.type == "meta":
                raise CheckpointError(f"{path}: buffer {name!r} of {type(module).__name__} has no value after "
                                      "loading", file=str(path))
            module._buffers[name] = buf.to(device=device, dtype=dtype if buf.is_floating_point() else buf.dtype)
    leftover = [k for k, p in model.named_parameters() if p.device.type == "meta"]
    if leftover:
        raise CheckpointError(f"{path}: parameters not loaded: {_first(leftover)}", file=str(path))
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["read_state_dict", "check_state_dict", "load_model"]

"""Checkpoint discovery, hashing, safe reading, shape checks and loading, with checkpoints the tests write."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vggt_blender.weights import discovery, loading
from vggt_blender.weights.registry import CHECKPOINTS, get_checkpoint
from vggt_blender.errors import CheckpointError, WeightsNotFoundError
from vggt_blender.model import VGGT, VGGTConfig
from vggt_blender.weights.discovery import default_cache_dir, resolve_weights, sha256_file
from vggt_blender.weights.loading import check_state_dict, load_model, read_state_dict

TINY = Path(__file__).parent / "fixtures" / "parity" / "tiny"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VGGT_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def tiny_config() -> VGGTConfig:
    return VGGTConfig.load(TINY / "config.json")


@pytest.fixture(scope="module")
def tiny_sd(tiny_config: VGGTConfig) -> dict[str, torch.Tensor]:
    """Random weights of the tiny configuration in the official key layout."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in VGGT(tiny_config).state_dict().items()}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory, tiny_sd) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    pt, st = folder / "model.pt", folder / "model.safetensors"
    torch.save(tiny_sd, pt)
    save_file(tiny_sd, str(st))
    return {"pt": pt, "safetensors": st}


# --------------------------------------------------------------------------------------- locations


def test_default_cache_dir_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir() == tmp_path / "xdg" / "vggt_blender"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vggt_blender"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_cache_dir() == tmp_path / "home" / "Library" / "Caches" / "vggt_blender"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_cache_dir() == tmp_path / "local" / "vggt_blender"


def test_resolve_order_explicit_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_file = tmp_path / "xdg" / "vggt_blender" / "vggt-1b" / "model.pt"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(b"c")
    env_file = tmp_path / "env.safetensors"
    env_file.write_bytes(b"e")
    explicit = tmp_path / "explicit.pt"
    explicit.write_bytes(b"x")

    assert resolve_weights(None) == cache_file.resolve()
    monkeypatch.setenv("VGGT_WEIGHTS", str(env_file))
    assert resolve_weights(None) == env_file.resolve()
    assert resolve_weights(str(explicit)) == explicit.resolve()
    # a folder holding the checkpoint's file is accepted
    assert resolve_weights(cache_file.parent) == cache_file.resolve()

    with pytest.raises(WeightsNotFoundError, match=r"nope\.pt: the weights file given by --weights does not exist"):
        resolve_weights(tmp_path / "nope.pt")
    monkeypatch.setenv("VGGT_WEIGHTS", str(tmp_path / "gone.pt"))
    with pytest.raises(WeightsNotFoundError, match=r"gone\.pt: the weights file given by \$VGGT_WEIGHTS"):
        resolve_weights(None)
    with pytest.raises(WeightsNotFoundError, match="holds no checkpoint"):
        resolve_weights(tmp_path / "xdg")


def test_cache_lookup_falls_back_to_every_known_checkpoint(tmp_path: Path, monkeypatch) -> None:
    # Only the commercial checkpoint was downloaded: a plain lookup (default vggt-1b) still finds it.
    commercial = tmp_path / "xdg" / "vggt_blender" / "vggt-1b-commercial" / "vggt_1B_commercial.pt"
    commercial.parent.mkdir(parents=True)
    commercial.write_bytes(b"c")
    assert resolve_weights(None) == commercial.resolve()
    # ...but the asked-for checkpoint's folder wins when both are there.
    plain = tmp_path / "xdg" / "vggt_blender" / "vggt-1b" / "model.pt"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"p")
    assert resolve_weights(None) == plain.resolve()
    assert resolve_weights(None, checkpoint="vggt-1b-commercial") == commercial.resolve()
    # A $VGGT_WEIGHTS naming nothing is reported before anything else (the CLI/worker download checks it).
    monkeypatch.setenv("VGGT_WEIGHTS", str(tmp_path / "typo.pt"))
    with pytest.raises(WeightsNotFoundError, match=r"typo\.pt: the weights file given by \$VGGT_WEIGHTS"):
        discovery.check_weights_env()


def test_unreadable_checkpoint_is_one_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    real_open = open

    def refuse(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(CheckpointError, match=r"model\.pt: cannot read the checkpoint to hash it: Permission denied"):
        sha256_file(path)
    with pytest.raises(CheckpointError, match=r"model\.pt: cannot open the checkpoint: Permission denied"):
        loading.read_state_dict(path)


def test_missing_weights_message_says_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(None)
    msg = str(info.value)
    dest = tmp_path / "xdg" / "vggt_blender" / "vggt-1b" / "model.pt"
    assert "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt" in msg
    assert "CC BY-NC 4.0" in msg and f"save it as {dest}" in msg
    assert "python -m vggt_blender download --model vggt-1b" in msg and "VGGT_WEIGHTS" in msg
    assert info.value.code == "no_weights"
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(None, checkpoint="vggt-1b-commercial")
    msg = str(info.value)
    assert "VGGT-1B-Commercial" in msg and "--token" in msg and "gated" in msg and "VGGT License v1" in msg
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        resolve_weights(None, checkpoint="nope")


def test_missing_weights_message_in_blenders_words(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(None, caller="blender")
    msg = str(info.value)
    assert "Download Weights in Preferences > Add-ons > VGGT Reconstruction" in msg and "--" not in msg
    assert f"save it as {tmp_path / 'xdg' / 'vggt_blender' / 'vggt-1b' / 'model.pt'}" in msg
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pt: the weights file given by the Weights path of the "
                                                   r"add-on preferences does not exist"):
        resolve_weights(tmp_path / "nope.pt", caller="blender")
    assert discovery.missing_weights_message("vggt-1b-commercial", "blender").endswith(
        "accept its licence at https://huggingface.co/facebook/VGGT-1B-Commercial first")
    with pytest.raises(ValueError, match="caller must be one of cli, blender"):
        discovery.missing_weights_message(caller="gui")


def test_registry() -> None:
    ckpt = get_checkpoint("vggt-1b")
    assert ckpt.url == "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt" and not ckpt.gated
    assert ckpt.parameters == 1_256_537_516 and "5.03 GB" in ckpt.size_text
    com = CHECKPOINTS["vggt-1b-commercial"]
    assert com.gated and com.repo_id == "facebook/VGGT-1B-Commercial" and "Acceptable Use" in com.licence
    assert com.url.startswith("https://huggingface.co/facebook/VGGT-1B-Commercial/resolve/main/")
    assert "gated" in com.describe().lower() and "CC BY-NC" in ckpt.describe()


# ------------------------------------------------------------------------------------------ hashing


def test_sha256_is_cached_by_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 100_000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sha256_file(f, chunk_size=4096) == want
    sidecar = tmp_path / "w.bin.sha256.json"
    assert sidecar.is_file()
    # the cached digest is used without reading the file: plant a fake one with the same size and mtime
    sidecar.write_text(sidecar.read_text().replace(want, "f" * 64))
    assert sha256_file(f) == "f" * 64
    f.write_bytes(b"abcd" * 100_000)  # another size: hashed again
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_sha256_sidecar_falls_back_to_cache_folder(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    f = folder / "m.pt"
    f.write_bytes(b"z" * 1000)
    (folder / "m.pt.sha256.json").mkdir()  # the sidecar cannot be written there
    want = hashlib.sha256(b"z" * 1000).hexdigest()
    assert sha256_file(f) == want
    cached = list((tmp_path / "xdg" / "vggt_blender" / "hashes").iterdir())
    assert len(cached) == 1 and want in cached[0].read_text()
    with pytest.raises(CheckpointError, match="file not found"):
        sha256_file(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_read_state_dict_formats(tiny_files, tiny_sd, kind: str) -> None:
    sd = read_state_dict(tiny_files[kind])
    assert sd.keys() == tiny_sd.keys()
    for k, v in tiny_sd.items():
        assert torch.equal(sd[k], v), k


def test_read_wrapped_and_prefixed_state_dicts(tmp_path: Path) -> None:
    sd = {"aggregator.camera_token": torch.ones(1, 2, 1, 4)}
    torch.save({"model": sd, "epoch": 3, "optimizer": {"lr": 1e-4}}, tmp_path / "train.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    for name in ("train.pt", "ddp.pth"):
        out = read_state_dict(tmp_path / name)
        assert list(out) == ["aggregator.camera_token"] and torch.equal(out["aggregator.camera_token"], sd[
            "aggregator.camera_token"])
    # a legacy (non-zip) torch.save file still loads
    torch.save(sd, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_dict(tmp_path / "legacy.bin")["aggregator.camera_token"], sd[
        "aggregator.camera_token"])


def test_damaged_files_are_reported(tmp_path: Path, tiny_files) -> None:
    for kind in ("pt", "safetensors"):
        data = tiny_files[kind].read_bytes()
        cut = tmp_path / f"cut.{kind}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=rf"cut\.{kind}: cannot read .* truncated or corrupted"):
            read_state_dict(cut)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096).replace(b"\x80", b"\x81").replace(b"PK", b"QK"))
    with pytest.raises(CheckpointError, match="garbage.pt: not a PyTorch or safetensors checkpoint"):
        read_state_dict(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: the checkpoint file is empty"):
        read_state_dict(empty)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint file not found"):
        read_state_dict(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this would create a marker file: a stand-in for arbitrary code in a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    torch.save({"weight": torch.zeros(2), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: refused to load: the file contains Python objects"):
        read_state_dict(tmp_path / "evil.pt")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="raw.pkl: refused to load"):
        read_state_dict(tmp_path / "raw.pkl")
    assert not marker.exists()


def test_non_state_dicts_are_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: not a state dict \\(the file holds a list\\)"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"a": torch.zeros(2), "b": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="mixed.pt: not a state dict: 1 entry are not tensors \\(e.g. 'b'\\)"):
        read_state_dict(tmp_path / "mixed.pt")


def test_check_state_dict_messages(tiny_config: VGGTConfig, tiny_sd) -> None:
    expected = {k: tuple(v.shape) for k, v in tiny_sd.items()}
    check_state_dict(tiny_sd, expected)  # a matching one passes

    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).state_dict()
    with pytest.raises(CheckpointError, match=r"f.pt: no VGGT keys: this looks like another model's checkpoint "
                                              r"\(its keys: 0.bias, 0.weight\)"):
        check_state_dict(other, expected, file="f.pt")

    missing = {k: v for k, v in tiny_sd.items() if not k.startswith("track_head.")}
    n_missing = len(tiny_sd) - len(missing)
    with pytest.raises(CheckpointError, match=rf"{n_missing} missing keys \(track_head\.") as info:
        check_state_dict(missing, expected)
    assert "more)" in str(info.value)

    wrong = dict(tiny_sd)  # a VGGT-1B shape for one key: a checkpoint for another configuration
    wrong["aggregator.camera_token"] = torch.zeros(1, 2, 1, 1024)
    wrong["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(wrong, expected)
    msg = str(info.value)
    assert "1 shape mismatch (aggregator.camera_token: checkpoint [1, 2, 1, 1024] vs model [1, 2, 1, 64])" in msg
    assert "another model configuration" in msg and "1 unexpected key (extra.weight)" in msg

    with pytest.raises(CheckpointError, match="not a state dict"):
        check_state_dict({"a": 1}, expected)


# ------------------------------------------------------------------------------------------ loading


def test_load_model_matches_checkpoint_and_runs(tiny_files, tiny_sd, tiny_config) -> None:
    model = load_model(tiny_config, tiny_files["pt"], device="cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    got = model.state_dict()
    assert got.keys() == tiny_sd.keys()
    for k, v in tiny_sd.items():
        assert got[k].dtype == torch.float32 and torch.equal(got[k], v), k

    torch.manual_seed(0)
    reference = VGGT(tiny_config).eval()
    reference.load_state_dict(tiny_sd)
    images = torch.rand(2, 3, 28, 42)
    with torch.inference_mode():
        ours, ref = model(images), reference(images)
    for key in ("pose_enc", "depth", "world_points", "world_points_conf"):
        assert torch.equal(ours[key], ref[key]), key


def test_load_model_config_forms_and_dtype(tiny_files, tiny_sd) -> None:
    model = load_model(str(TINY / "config.json"), tiny_files["safetensors"], dtype=torch.bfloat16)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    key = "aggregator.camera_token"
    assert torch.equal(params[key], tiny_sd[key].to(torch.bfloat16))
    # the parity fixture: float16 on disk, float32 in the model, values exact
    model = load_model(VGGTConfig.load(TINY / "config.json").to_dict(), TINY / "weights.safetensors")
    disk = load_file(str(TINY / "weights.safetensors"))
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, disk[k].float()), k


def test_load_model_lean_puts_matrices_in_low_precision(tiny_files, tiny_sd, tiny_config) -> None:
    from vggt_blender.model.execution import ExecutionMode

    model = load_model(tiny_config, tiny_files["safetensors"], execution=ExecutionMode.lean_for("cpu", torch.bfloat16))
    assert model.execution.lean and model.execution.dtype == torch.bfloat16
    params = dict(model.named_parameters())
    assert params.keys() == tiny_sd.keys()  # the track head is loaded too
    for key in ("aggregator.frame_blocks.0.attn.qkv.weight", "aggregator.patch_embed.blocks.1.mlp.fc2.bias",
                "aggregator.patch_embed.patch_embed.proj.weight"):
        assert params[key].dtype == torch.bfloat16 and torch.equal(params[key], tiny_sd[key].to(torch.bfloat16)), key
    # Norms, LayerScale, tokens, the position table and every head keep the checkpoint's exact float32 values.
    for key in ("aggregator.frame_blocks.0.norm1.weight", "aggregator.global_blocks.2.ls1.gamma",
                "aggregator.camera_token", "aggregator.patch_embed.pos_embed",
                "aggregator.frame_blocks.0.attn.q_norm.weight", "depth_head.projects.0.weight",
                "track_head.tracker.corr_mlp.fc1.weight", "camera_head.trunk.0.attn.qkv.weight"):
        assert params[key].dtype == torch.float32 and torch.equal(params[key], tiny_sd[key]), key


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, torch.int8])
def test_integer_or_bool_weights_are_one_line_errors(tmp_path: Path, tiny_sd, tiny_config, bad) -> None:
    sd = dict(tiny_sd)
    key = "aggregator.frame_blocks.1.mlp.fc1.weight"
    sd[key] = sd[key].to(bad)
    path = tmp_path / "ints.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as info:
        load_model(tiny_config, path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: weight '{key}' holds ")
    assert "floating-point" in message and info.value.file == str(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused(tmp_path: Path, tiny_sd, tiny_config, value) -> None:
    sd = dict(tiny_sd)
    key = "depth_head.scratch.output_conv2.2.bias"
    sd[key] = sd[key].clone()
    sd[key][0] = value
    path = tmp_path / "nan.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=rf"nan\.pt: weight '{key}' holds NaN or infinite values"):
        load_model(tiny_config, path)


def test_weights_that_overflow_the_chosen_precision_are_named(tmp_path: Path, tiny_sd, tiny_config) -> None:
    sd = dict(tiny_sd)
    key = "camera_head.embed_pose.weight"
    sd[key] = sd[key].clone()
    sd[key][0, 0] = 1e6  # finite in float32, infinite in float16
    path = tmp_path / "big.pt"
    torch.save(sd, path)
    load_model(tiny_config, path)  # float32: fine
    with pytest.raises(CheckpointError, match=rf"big\.pt: weight '{key}' does not fit in float16"):
        load_model(tiny_config, path, dtype=torch.float16)


def test_load_model_refuses_wrong_checkpoint(tmp_path: Path, tiny_config, tiny_files) -> None:
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model("vggt-1b", tiny_files["pt"])  # tiny weights for the 1B configuration
    torch.save(torch.nn.Linear(3, 3).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="linear.pt: no VGGT keys"):
        load_model(tiny_config, tmp_path / "linear.pt")


def _rss_mib() -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc (Linux) to measure resident memory")
    line = next(l for l in status.read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_building_the_1b_model_allocates_no_weights() -> None:
    before = _rss_mib()
    model = loading.build_on_meta(VGGTConfig.vggt_1b())
    grown_mib = _rss_mib() - before
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == 1_256_537_516
    assert all(p.device.type == "meta" for p in params)
    assert grown_mib < 500, f"peak memory grew by {grown_mib:.0f} MiB (weights are 4,800 MiB)"
    # nothing global changed: modules built afterwards are real again
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"

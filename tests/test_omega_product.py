"""VGGT-Omega through the product: a tiny Omega checkpoint the tests write in the official layout (a raw state dict,
buffers included) goes through the command line and the worker with no --model (the family comes from its keys);
the file records the family and has no point map; wrong-family and damaged checkpoints get their own messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (TINY_CONFIG, TINY_OMEGA_CONFIG, unproject, write_photos, write_tiny_checkpoint,
                           write_tiny_omega_checkpoint)
from vggt_blender import options as opt
from vggt_blender.errors import ReconstructionFileError
from vggt_blender.io.reconstruction import (REQUIRED_KEYS, load_reconstruction, make_reconstruction,
                                            save_reconstruction)
from vggt_blender.io.summary import summarize
from vggt_blender.jobs import protocol
from vggt_blender.weights.registry import CHECKPOINTS

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # no checkpoint is found by accident
    env["OMP_NUM_THREADS"] = "1"
    env.pop("VGGT_WEIGHTS", None)
    return env


def run_cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vggt_blender", *args], capture_output=True, text=True,
                          env=_env(tmp), timeout=300, cwd=tmp)


@pytest.fixture(scope="module")
def omega(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("omega")
    photos = write_photos(tmp / "photos", count=3, size=(160, 120))
    checkpoint = write_tiny_omega_checkpoint(tmp)
    out = tmp / "omega.npz"
    # No --model: the keys say VGGT-Omega; --config gives the tiny model's sizes (the published ones are 1B).
    result = run_cli(["reconstruct", str(tmp / "photos"), "-o", str(out), "--weights", str(checkpoint),
                      "--config", str(TINY_OMEGA_CONFIG), "--device", "cpu", "--align", "none"], tmp)
    return {"tmp": tmp, "photos": photos, "checkpoint": checkpoint, "out": out, "result": result}


def test_registry_has_both_omega_checkpoints_gated_with_the_fair_licence():
    for name, filename in (("vggt-omega-1b-512", "vggt_omega_1b_512.pt"),
                           ("vggt-omega-1b-256-text", "vggt_omega_1b_256_text.pt")):
        ckpt = CHECKPOINTS[name]
        assert (ckpt.repo_id, ckpt.filename, ckpt.family, ckpt.config) == ("facebook/VGGT-Omega", filename,
                                                                          "vggt-omega", name)
        assert ckpt.gated and "FAIR Noncommercial Research License" in ckpt.licence
        assert ckpt.parameters == 1_143_814_185
        text = ckpt.describe()
        assert "FAIR Noncommercial Research License" in text and "Gated" in text and ckpt.page_url in text
    assert opt.CHECKPOINT_NAMES == ("vggt-1b", "vggt-1b-commercial", "vggt-omega-1b-512", "vggt-omega-1b-256-text")
    assert opt.DEFAULT_CHECKPOINT == "vggt-1b"


def test_cli_reconstructs_with_an_omega_checkpoint_and_records_the_family(omega):
    result = omega["result"]
    assert result.returncode == 0, result.stderr
    rec = load_reconstruction(omega["out"])
    prov = rec.provenance_dict
    assert prov["model_family"] == "vggt-omega" and rec.model_family == "vggt-omega"
    assert prov["mode"] == "balanced"  # the default "crop" means Omega's usual input
    assert prov["checkpoint"] == "omega.pt" and prov["model"] is None
    # No point map, never an invented one; the file holds no such entry.
    assert rec.point_map is None and rec.point_map_conf is None and not rec.has_point_map
    with np.load(omega["out"]) as z:
        assert "point_map" not in z.files and "point_map_conf" not in z.files
    # Omega's balanced loader: 160x120 photos -> patch-16 multiples at the photo's aspect.
    w, h = (int(v) for v in rec.model_size)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 160 / 120) < 0.05
    # The points are the one derivation from depth + cameras (an independent unprojection agrees).
    assert np.allclose(rec.world_points, unproject(rec.depth, rec.extrinsics, rec.intrinsics_model), atol=1e-4)
    assert np.isfinite(rec.extrinsics).all() and (rec.depth > 0).all()
    assert "no point map" in summarize(rec)


def test_ply_and_colmap_export_of_an_omega_file(omega, tmp_path):
    ply = tmp_path / "points.ply"
    result = run_cli(["export-ply", str(omega["out"]), str(ply), "--max-points", "500"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"element vertex 500" in ply.read_bytes()[:400]
    bad = run_cli(["export-ply", str(omega["out"]), str(tmp_path / "pm.ply"), "--point-source", "point_map"],
                  tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (f"error: {omega['out']}: has no point map (a VGGT-Omega "
                                                   "reconstruction); use --point-source depth")
    assert not (tmp_path / "pm.ply").exists()
    col = run_cli(["export-colmap", str(omega["out"]), str(tmp_path / "colmap")], tmp_path)
    assert col.returncode == 0, col.stderr
    assert (tmp_path / "colmap" / "sparse" / "0" / "cameras.bin").stat().st_size > 0


def test_align_keeps_the_file_without_a_point_map(omega, tmp_path):
    out = tmp_path / "aligned.npz"
    result = run_cli(["align", str(omega["out"]), "-o", str(out), "--up", "cameras"], tmp_path)
    assert result.returncode == 0, result.stderr
    rec = load_reconstruction(out)
    assert rec.point_map is None and rec.model_family == "vggt-omega"
    assert not np.allclose(rec.alignment, load_reconstruction(omega["out"]).alignment)


def test_wrong_family_and_damaged_checkpoints_get_their_messages(omega, tmp_path):
    tmp, photos = omega["tmp"], str(omega["tmp"] / "photos")
    v1 = write_tiny_checkpoint(tmp_path)
    cases = [
        (["--weights", str(omega["checkpoint"]), "--model", "vggt-1b"],
         f"error: {omega['checkpoint']}: this is a VGGT-Omega checkpoint, but the VGGT model was requested; "
         "choose a VGGT-Omega model (or leave the model unset to follow the checkpoint)"),
        (["--weights", str(omega["checkpoint"]), "--config", str(TINY_CONFIG)],
         f"error: {omega['checkpoint']}: this is a VGGT-Omega checkpoint, but the VGGT model was requested"),
        (["--weights", str(v1), "--model", "vggt-omega-1b-512"],
         f"error: {v1}: this is a VGGT checkpoint, but the VGGT-Omega model was requested"),
        (["--weights", str(v1), "--config", str(TINY_CONFIG), "--mode", "balanced"],
         "error: mode 'balanced' is a VGGT-Omega loader mode, but this run uses VGGT; choose crop or pad"),
        (["--weights", str(omega["checkpoint"]), "--model", "vggt-omega-1b-512", "--config", str(TINY_CONFIG)],
         f"error: --config {TINY_CONFIG} is a VGGT configuration, but the model vggt-omega-1b-512 is VGGT-Omega"),
    ]
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(omega["checkpoint"].read_bytes()[:4000])
    cases.append((["--weights", str(damaged)], f"error: {damaged}: cannot read this checkpoint; it is truncated"))
    foreign = tmp_path / "foreign.pt"
    import torch

    torch.save({"encoder.weight": torch.zeros(2, 2)}, foreign)
    cases.append((["--weights", str(foreign)], f"error: {foreign}: not a VGGT or VGGT-Omega checkpoint"))
    for extra, message in cases:
        out = tmp_path / "x.npz"
        result = run_cli(["reconstruct", photos, "-o", str(out), "--device", "cpu", "-q", *extra], tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert len(lines) == 1 and lines[0].startswith(message), (extra, result.stderr)
        assert not out.exists()


def test_worker_request_with_an_omega_checkpoint(omega, tmp_path):
    out = tmp_path / "worker.npz"
    req = protocol.make_request([str(p) for p in omega["photos"]], str(out), weights=str(omega["checkpoint"]),
                                device="cpu", config=str(TINY_OMEGA_CONFIG), mode="max_size")
    assert req["model"] is None
    result = subprocess.run([sys.executable, "-m", "vggt_blender.jobs.worker"], input=json.dumps(req) + "\n",
                            capture_output=True, text=True, env=_env(tmp_path), timeout=300, cwd=tmp_path)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stderr[-2000:]
    assert events[-1]["type"] == "result", events[-1]
    rec = load_reconstruction(out)
    assert rec.model_family == "vggt-omega" and rec.point_map is None
    assert rec.provenance_dict["mode"] == "max_size"
    assert max(int(v) for v in rec.model_size) == 512  # max_size: the longer side is the target size
    # A wrong-family model named in the request fails the job with the one-line message.
    bad = protocol.make_request([str(p) for p in omega["photos"]], str(tmp_path / "bad.npz"),
                                weights=str(omega["checkpoint"]), device="cpu", model="vggt-1b-commercial")
    result = subprocess.run([sys.executable, "-m", "vggt_blender.jobs.worker"], input=json.dumps(bad) + "\n",
                            capture_output=True, text=True, env=_env(tmp_path), timeout=300, cwd=tmp_path)
    last = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 1 and last["type"] == "error", result.stdout
    assert "this is a VGGT-Omega checkpoint, but the VGGT model was requested" in last["message"]
    assert not (tmp_path / "bad.npz").exists()


def test_request_model_key_is_checked():
    req = protocol.make_request(["a.jpg"], "o.npz", model="vggt-omega-1b-512")
    assert req["model"] == "vggt-omega-1b-512" and req["config"] is None
    with pytest.raises(Exception, match="'model' must be one of vggt-1b, vggt-1b-commercial"):
        protocol.make_request(["a.jpg"], "o.npz", model="vggt-2")
    with pytest.raises(Exception, match="'mode' must be one of crop, pad, balanced, max_size"):
        protocol.make_request(["a.jpg"], "o.npz", mode="square")


def test_file_without_point_map_round_trips_and_half_a_point_map_is_refused(tmp_path):
    depth = np.full((2, 8, 12), 2.0, np.float32)
    k = np.array([[10.0, 0, 6], [0, 10.0, 4], [0, 0, 1]])
    ext = np.tile(np.eye(3, 4), (2, 1, 1))
    rec = make_reconstruction(depth, ext, np.stack([k, k]), no_point_map=True,
                              provenance={"model_family": "vggt-omega"})
    path = save_reconstruction(tmp_path / "r.npz", rec)
    back = load_reconstruction(path)
    assert back.point_map is None and back.model_family == "vggt-omega"
    assert "point_map" not in REQUIRED_KEYS and "depth" in REQUIRED_KEYS
    # A v1 file (point map present, no family recorded) still reads as VGGT's.
    v1 = load_reconstruction(save_reconstruction(tmp_path / "v1.npz", make_reconstruction(depth, ext,
                                                                                          np.stack([k, k]))))
    assert v1.has_point_map and v1.model_family == "vggt"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["point_map_conf"] = np.ones((2, 8, 12), np.float32)
    half = tmp_path / "half.npz"
    np.savez(half, **arrays)
    with pytest.raises(ReconstructionFileError, match="has 'point_map_conf' but not 'point_map'"):
        load_reconstruction(half)


def test_the_family_is_read_from_the_official_fixture_weights_and_a_text_head_picks_the_256_preset(tmp_path):
    from vggt_blender.engine.inference import choose_model, preprocess_settings
    from vggt_blender.options import InferenceOptions

    omega = choose_model(InferenceOptions(), str(TINY_OMEGA_CONFIG.parent / "weights.safetensors"))
    assert (omega.family, omega.config_name, omega.model_name) == ("vggt-omega", "vggt-omega-1b-512", None)
    assert preprocess_settings(omega, "crop") == ("balanced", None)
    assert preprocess_settings(omega, "pad") == ("max_size", None)
    v1 = choose_model(InferenceOptions(), str(TINY_CONFIG.parent / "weights.safetensors"))
    assert (v1.family, v1.config_name) == ("vggt", "vggt-1b")
    assert preprocess_settings(v1, "pad") == ("pad", None)
    text = choose_model(InferenceOptions(model_name="vggt-omega-1b-256-text"), None)
    assert text.config.text_alignment_head is not None and preprocess_settings(text, "balanced") == ("balanced", 256)
    # The text head's keys alone select the 256-px text preset when no model is named.
    import torch

    path = tmp_path / "text.pt"
    torch.save({"aggregator.inter_frame_blocks.0.attn.qkv.weight": torch.zeros(1),
                "text_alignment_head.proj.weight": torch.zeros(1)}, path)
    assert choose_model(InferenceOptions(), str(path)).config_name == "vggt-omega-1b-256-text"


def test_a_folder_holding_an_omega_checkpoint_is_found_without_a_model(tmp_path, monkeypatch):
    from vggt_blender.errors import WeightsNotFoundError
    from vggt_blender.weights.discovery import resolve_weights

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "vggt_omega_1b_512.pt").write_bytes(b"PK\x03\x04")
    assert resolve_weights(folder) == (folder / "vggt_omega_1b_512.pt").resolve()
    # The cache lets only the requested family's checkpoints stand in: no Omega file for a VGGT request.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VGGT_WEIGHTS", raising=False)
    cache = tmp_path / "xdg" / "vggt_blender" / "vggt-omega-1b-512"
    cache.mkdir(parents=True)
    (cache / "vggt_omega_1b_512.pt").write_bytes(b"PK\x03\x04")
    assert resolve_weights(None, "vggt-omega-1b-256-text") == (cache / "vggt_omega_1b_512.pt").resolve()
    with pytest.raises(WeightsNotFoundError, match="download --model vggt-1b"):
        resolve_weights(None, "vggt-1b")

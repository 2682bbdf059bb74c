"""Loading VGGT-Omega checkpoints through weights.loading: the family comes from the keys, a checkpoint of
the other family is refused with its own message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vggt_blender.errors import CheckpointError
from vggt_blender.model import VGGT, VGGTOmega, VGGTOmegaConfig
from vggt_blender.model.family import build_model, resolve_config
from vggt_blender.weights.loading import load_model

PARITY = Path(__file__).parent / "fixtures" / "parity"
OMEGA = PARITY / "omega_tiny"


@pytest.fixture(scope="module")
def omega_pt(tmp_path_factory) -> Path:
    # A raw state dict saved with torch.save, as the official vggt_omega_1b_512.pt is.
    path = tmp_path_factory.mktemp("omega") / "vggt_omega_tiny.pt"
    torch.save(load_file(str(OMEGA / "weights.safetensors")), path)
    return path


def test_config_from_the_checkpoint_keys_reproduces_the_fixture(omega_pt):
    model = load_model(OMEGA / "config.json", omega_pt)
    assert isinstance(model, VGGTOmega) and not model.training
    cases = load_file(str(OMEGA / "cases.safetensors"))
    with torch.no_grad():
        out = model(cases["case1.images"])
    assert torch.equal(out["pose_enc"], cases["case1.out.pose_enc"])


def test_family_from_keys_without_a_config(omega_pt):
    # No config: the keys say VGGT-Omega, so its published 1B-512 configuration is tried, and the tiny
    # weights then fail the shape check with a message naming VGGT-Omega (not VGGT).
    with pytest.raises(CheckpointError, match="does not match the VGGT-Omega model: .*shape mismatch"):
        load_model(None, omega_pt)


def test_wrong_family_is_refused_by_name(omega_pt, tmp_path):
    with pytest.raises(CheckpointError, match="VGGT-Omega checkpoint, but the VGGT model was requested"):
        load_model("vggt-1b", omega_pt)
    v1 = tmp_path / "v1.pt"
    torch.save(load_file(str(PARITY / "tiny" / "weights.safetensors")), v1)
    with pytest.raises(CheckpointError, match="VGGT checkpoint, but the VGGT-Omega model was requested"):
        load_model("vggt-omega-1b-512", v1)
    other = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(CheckpointError, match="not a VGGT or VGGT-Omega checkpoint"):
        load_model(None, other)


def test_resolve_config_reads_either_family():
    assert isinstance(resolve_config("vggt-omega-1b-256-text"), VGGTOmegaConfig)
    assert resolve_config("vggt-omega-1b-256-text").text_alignment_head is not None
    assert isinstance(resolve_config(str(OMEGA / "config.json")), VGGTOmegaConfig)
    assert not isinstance(resolve_config(str(PARITY / "tiny" / "config.json")), VGGTOmegaConfig)
    with torch.device("meta"):
        assert isinstance(build_model(OMEGA / "config.json"), VGGTOmega)
        assert isinstance(build_model(PARITY / "tiny" / "config.json"), VGGT)

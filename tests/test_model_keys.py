"""VGGT-1B built on the meta device has exactly the official state-dict keys and shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vggt_blender.model import VGGT, ModelConfigError, VGGTConfig

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_TENSORS = 1797
OFFICIAL_PARAMS = 1_256_537_516


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "vggt1b_state_dict_shapes.json").read_text())


@pytest.fixture(scope="module")
def meta_model() -> VGGT:
    with torch.device("meta"):
        return VGGT(VGGTConfig.vggt_1b())


def test_fixture_is_the_official_inventory(official_shapes):
    assert len(official_shapes) == OFFICIAL_TENSORS
    total = sum(int(torch.Size(s).numel()) for s in official_shapes.values())
    assert total == OFFICIAL_PARAMS


def test_keys_and_shapes_match_outside_track_head(meta_model, official_shapes):
    ours = {k: list(v.shape) for k, v in meta_model.state_dict().items() if not k.startswith("track_head.")}
    ref = {k: v for k, v in official_shapes.items() if not k.startswith("track_head.")}
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    assert [k for k in ref if ours[k] != ref[k]] == []


def test_track_head_keys_match(meta_model, official_shapes):
    assert meta_model.track_head is not None
    ours = {k: list(v.shape) for k, v in meta_model.state_dict().items() if k.startswith("track_head.")}
    ref = {k: v for k, v in official_shapes.items() if k.startswith("track_head.")}
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    assert [k for k in ref if ours[k] != ref[k]] == []


def test_whole_model_count_and_strict_assign_load(official_shapes):
    with torch.device("meta"):
        model = VGGT(VGGTConfig.vggt_1b())
    params = sum(p.numel() for p in model.parameters())
    assert params == OFFICIAL_PARAMS
    assert len(model.state_dict()) == OFFICIAL_TENSORS
    state = {k: torch.empty(s, device="meta") for k, s in official_shapes.items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # No buffers at all: nothing stays behind on the meta device after an assign-load of real tensors.
    assert list(model.buffers()) == []


def test_config_round_trip_and_presets(tmp_path):
    cfg = VGGTConfig.vggt_1b()
    assert VGGTConfig.preset("vggt-1b") == cfg
    assert VGGTConfig.from_dict(cfg.to_dict()) == cfg
    tiny = VGGTConfig.load(FIXTURES / "parity" / "tiny" / "config.json")
    assert tiny.embed_dim == 64 and tiny.patch_embed.depth == 2 and tiny.track_head.corr_levels == 3
    assert VGGTConfig.from_dict(tiny.to_dict()) == tiny
    path = tmp_path / "cfg.json"
    tiny.save(path)
    assert VGGTConfig.resolve(path) == tiny
    assert VGGTConfig.resolve("vggt-1b") == cfg
    # Missing keys keep the VGGT-1B defaults.
    assert VGGTConfig.from_dict({"dpt_head": {"features": 128}}).dpt_head.out_channels == [256, 512, 1024, 1024]


@pytest.mark.parametrize(
    "data, words",
    [
        ({"embed_dims": 64}, ["unknown key 'embed_dims'"]),
        ({"camera_head": {"depth": 4}}, ["camera_head", "unknown key 'depth'"]),
        ({"patch_embed": {"type": "vit"}}, ["patch_embed.type"]),
        ({"depth": "24"}, ["'depth'", "integer"]),
        ({"dpt_head": {"intermediate_layer_idx": [4, 11, 17, 40]}}, ["40"]),
        # Once a ZeroDivisionError traceback.
        ({"num_heads": 0}, ["num_heads 0", "positive whole numbers"]),
        ({"patch_size": 0}, ["patch_size 0"]),
        ({"camera_head": {"num_heads": -2}}, ["camera_head.num_heads -2"]),
    ],
)
def test_config_rejects_bad_input(data, words):
    with pytest.raises(ModelConfigError) as info:
        VGGTConfig.from_dict(data)
    for word in words:
        assert word in str(info.value)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelConfigError, match="bad.json"):
        VGGTConfig.load(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"heads": 3}))
    with pytest.raises(ModelConfigError, match="unknown.json.*unknown key 'heads'"):
        VGGTConfig.load(unknown)
    with pytest.raises(ModelConfigError, match="missing.json"):
        VGGTConfig.load(tmp_path / "missing.json")
    with pytest.raises(ModelConfigError, match="unknown model preset"):
        VGGTConfig.preset("vggt-7b")


def test_conv_patch_embed_keys():
    cfg = VGGTConfig.from_dict({"patch_embed": {"type": "conv"}})
    with torch.device("meta"):
        model = VGGT(cfg, enable_track=False)
    keys = [k for k in model.state_dict() if k.startswith("aggregator.patch_embed.")]
    assert sorted(keys) == ["aggregator.patch_embed.proj.bias", "aggregator.patch_embed.proj.weight"]


def test_full_size_forward_shapes_on_meta(meta_model):
    # Shape-only run of VGGT-1B (no memory, no compute): non-square input, so the DINO table is resized.
    images = torch.empty(3, 3, 294, 518, device="meta")
    query = torch.empty(5, 2, device="meta")
    with torch.no_grad():
        out = meta_model.eval()(images, query_points=query)
    assert out["pose_enc"].shape == (1, 3, 9)
    assert len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, 3, 294, 518, 1)
    assert out["depth_conf"].shape == (1, 3, 294, 518)
    assert out["world_points"].shape == (1, 3, 294, 518, 3)
    assert out["world_points_conf"].shape == (1, 3, 294, 518)
    if meta_model.track_head is not None:
        assert out["track"].shape == (1, 3, 5, 2)
        assert out["vis"].shape == out["conf"].shape == (1, 3, 5)

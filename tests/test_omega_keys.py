"""VGGT-Omega built on the meta device has exactly the official state-dict keys and shapes; its config
reads the §13 schema; the model family is recognised from a state dict's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vggt_blender.model import ModelConfigError, VGGTOmega, VGGTOmegaConfig, detect_family
from vggt_blender.model.family import has_text_alignment_head

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_TENSORS = 1411
OFFICIAL_PARAMS = 1_143_814_185
OFFICIAL_BUFFERS = 78
TEXT_EXTRA_TENSORS = 71
TEXT_EXTRA_PARAMS = 205_659_136


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "vggt_omega_1b_state_dict_shapes.json").read_text())


@pytest.fixture(scope="module")
def text_extra_shapes() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "vggt_omega_1b_256_text_extra_shapes.json").read_text())


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_1b_512_keys_shapes_and_counts(official_shapes):
    assert len(official_shapes) == OFFICIAL_TENSORS
    with torch.device("meta"):
        model = VGGTOmega(VGGTOmegaConfig.omega_1b_512())
    ours = _shapes(model)
    assert sorted(set(official_shapes) - set(ours)) == []
    assert sorted(set(ours) - set(official_shapes)) == []
    assert [k for k in official_shapes if ours[k] != official_shapes[k]] == []
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS
    persistent = [k for k in ours if k.endswith(("bias_mask", "periods"))]
    assert len(persistent) == OFFICIAL_BUFFERS
    assert model.text_alignment_head is None


def test_1b_512_strict_assign_load_of_official_layout(official_shapes):
    with torch.device("meta"):
        model = VGGTOmega(VGGTOmegaConfig.preset("vggt-omega-1b-512"))
    state = {k: torch.empty(s, device="meta") for k, s in official_shapes.items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # A key the official layout lacks, or a wrong shape, is refused by the strict load.
    with pytest.raises(RuntimeError):
        model.load_state_dict({**state, "aggregator.global_blocks.0.ls1.gamma": torch.empty(1024, device="meta")},
                              strict=True, assign=True)


def test_256_text_adds_exactly_the_text_head(official_shapes, text_extra_shapes):
    assert len(text_extra_shapes) == TEXT_EXTRA_TENSORS
    with torch.device("meta"):
        model = VGGTOmega(VGGTOmegaConfig.preset("vggt-omega-1b-256-text"))
    ours = _shapes(model)
    want = {**official_shapes, **text_extra_shapes}
    assert set(ours) == set(want)
    assert [k for k in want if ours[k] != want[k]] == []
    assert sum(p.numel() for p in model.text_alignment_head.parameters()) == TEXT_EXTRA_PARAMS
    model.load_state_dict({k: torch.empty(s, device="meta") for k, s in want.items()}, strict=True, assign=True)


def test_fresh_model_buffers_are_the_official_init_values():
    # Unlike the official constructor (NaN masks), ours starts usable: masks 1/0/1, periods 100^(4k/d).
    model = VGGTOmega(VGGTOmegaConfig.load(FIXTURES / "parity" / "omega_tiny" / "config.json"))
    mask = model.aggregator.frame_blocks[0].attn.qkv.bias_mask
    third = mask.numel() // 3
    assert mask[:third].eq(1).all() and mask[third:2 * third].eq(0).all() and mask[2 * third:].eq(1).all()
    head_dim = model.config.embed_dim // model.config.num_heads
    expected = 100.0 ** (4 * torch.arange(head_dim // 4, dtype=torch.float64) / head_dim)
    torch.testing.assert_close(model.aggregator.rope_embed.periods.double(), expected, rtol=1e-6, atol=0)


def test_config_schema_round_trip_and_presets(tmp_path):
    cfg = VGGTOmegaConfig.omega_1b_512()
    assert VGGTOmegaConfig.from_dict(cfg.to_dict()) == cfg
    spec_13 = {"patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0,
               "num_register_tokens": 16, "register_attention_block_indices": [2, 6, 9, 14, 20],
               "cached_layer_indices": [4, 11, 17, 23], "rope_base": 100.0, "rope_normalize_coords": "max",
               "patch_embed": {"type": "dinov3", "depth": 24, "num_heads": 16, "mlp_ratio": 4.0,
                               "num_storage_tokens": 4, "rope_base": 100.0, "rope_normalize_coords": "max"},
               "camera_head": {"trunk_depth": 4, "num_heads": 16, "mlp_ratio": 4.0},
               "dense_head": {"features": 256, "out_channels": [256, 512, 1024, 1024],
                              "intermediate_layer_idx": [4, 11, 17, 23], "frames_chunk_size": 8},
               "text_alignment_head": None}
    assert VGGTOmegaConfig.from_dict(spec_13) == cfg
    text = VGGTOmegaConfig.from_dict({**spec_13, "text_alignment_head": {"depth": 4, "num_heads": 16,
                                                                          "mlp_ratio": 4.0}})
    assert text == VGGTOmegaConfig.preset("vggt-omega-1b-256-text")
    tiny = VGGTOmegaConfig.load(FIXTURES / "parity" / "omega_tiny" / "config.json")
    assert (tiny.embed_dim, tiny.depth, tiny.register_attention_block_indices) == (64, 5, [1, 3])
    assert tiny.head_layers == [0, 2, 3, 4]
    path = tmp_path / "omega.json"
    tiny.save(path)
    assert VGGTOmegaConfig.resolve(path) == tiny


@pytest.mark.parametrize(
    "change,words",
    [
        ({"cached_layer_indices": [4, 11, 17]}, "last layer 23"),
        ({"dense_head": {"intermediate_layer_idx": [4, 11, 16, 23]}}, "16 is not a cached layer"),
        ({"register_attention_block_indices": [24]}, "outside 0..23"),
        ({"num_heads": 12}, "4*num_heads"),
        ({"rope_normalize_coords": "separate"}, "not supported"),
        ({"patch_embed": {"type": "dinov2_reg"}}, "patch_embed.type"),
        ({"global_blocks": 3}, "unknown key 'global_blocks'"),
        ({"depth": "24"}, "must be an integer"),
    ],
)
def test_config_errors_name_the_problem(change, words):
    with pytest.raises(ModelConfigError, match=words.replace("*", r"\*").replace(".", r"\.")):
        VGGTOmegaConfig.from_dict(change)


def test_detect_family_from_keys(official_shapes, text_extra_shapes):
    v1 = json.loads((FIXTURES / "vggt1b_state_dict_shapes.json").read_text())
    assert detect_family(official_shapes) == "vggt-omega"
    assert detect_family({**official_shapes, **text_extra_shapes}) == "vggt-omega"
    assert detect_family(v1) == "vggt"
    assert detect_family(["module." + k for k in v1]) == "vggt"
    assert detect_family(["encoder.layer.0.weight", "decoder.bias"]) is None
    assert detect_family([]) is None
    assert detect_family([*official_shapes, *v1]) is None  # a mix of both is neither
    assert has_text_alignment_head(text_extra_shapes) and not has_text_alignment_head(official_shapes)

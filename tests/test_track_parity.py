"""Track head: sampler/correlation/embedding hand checks, state-dict layout, and parity with the official head
on the tiny fixture (TRACK_HEAD_SPEC; VGGT_SPEC §13)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vggt_blender.model.track_embeddings import flow_embedding, sincos_position_table
from vggt_blender.model.track_sampling import CorrelationPyramid, sample_at_points, sample_bilinear
from vggt_blender.model.tracker import TrackerPredictor

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "parity" / "tiny"

torch.set_num_threads(1)


def bilinear_np(grid: np.ndarray, x: float, y: float, padding: str) -> float:
    """Reference bilinear read of a 2-D array in pixel-index units (align_corners=True convention)."""
    h, w = grid.shape
    if padding == "border":
        x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    if w == 1:
        x = 0.0
    if h == 1:
        y = 0.0
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    total = 0.0
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        if 0 <= xi < w and 0 <= yi < h:
            total += weight * float(grid[yi, xi])
    return total


# ---- sampler -----------------------------------------------------------------------------------


def test_sampler_matches_hand_bilinear_border_and_zeros():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(5, 7)).astype(np.float32)
    maps = torch.from_numpy(grid)[None, None]
    points = [(2.3, 1.6), (0.0, 0.0), (6.0, 4.0), (-0.5, 2.0), (6.4, 4.7), (-0.7, 0.0), (3.25, -1.5)]
    coords = torch.tensor([points], dtype=torch.float32)
    for padding in ("border", "zeros"):
        got = sample_bilinear(maps, coords, padding)[0, 0].numpy()
        want = [bilinear_np(grid, x, y, padding) for x, y in points]
        np.testing.assert_allclose(got, want, atol=2e-6)
    # The documented cases: zero padding at x=-0.5 gives half the edge value, border clamps.
    assert sample_bilinear(maps, torch.tensor([[[-0.5, 2.0]]]), "zeros")[0, 0, 0] == pytest.approx(0.5 * grid[2, 0])
    assert sample_bilinear(maps, torch.tensor([[[6.5, 4.5]]]), "border")[0, 0, 0] == pytest.approx(grid[4, 6])


def test_sampler_size_one_axis_reads_index_zero():
    row = torch.tensor([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]])  # 1x5 map
    got = sample_bilinear(row, torch.tensor([[[1.5, -3.0], [2.0, 0.7]]]), "zeros")[0, 0]
    np.testing.assert_allclose(got.numpy(), [2.5, 3.0], atol=1e-6)


def test_sample_at_points_layout():
    maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    feats = sample_at_points(maps, torch.tensor([[[1.0, 2.0], [3.0, 0.0]]]))
    assert feats.shape == (1, 2, 2)  # [B, R, C]
    np.testing.assert_array_equal(feats[0].numpy(), [[9.0, 21.0], [3.0, 15.0]])


# ---- correlation --------------------------------------------------------------------------------


def test_correlation_window_order_and_levels():
    # One channel holding 1000*y + x, target 1: the volume is the map itself, so each window entry names its tap.
    h, w, r = 12, 16, 2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    fmaps = (1000 * ys + xs)[None, None, None]  # [1,1,1,H,W]
    pyramid = CorrelationPyramid(fmaps, levels=2, radius=r)
    coords = torch.tensor([[[[6.0, 5.0]]]])
    out = pyramid.lookup(torch.ones(1, 1, 1, 1), coords)[0, 0, 0]
    k = 2 * r + 1
    assert out.shape == (2 * k * k,)
    for a in range(-r, r + 1):  # x offset: slow index
        for c in range(-r, r + 1):  # y offset: fast index
            idx = (a + r) * k + (c + r)
            assert out[idx] == 1000 * (5 + c) + (6 + a)
            # Level 1: 2x2 means, centre at (x/2, y/2); pooled value at (i, j) = 1000*(2i+0.5) + 2j+0.5.
            lx, ly = 3 + a, 2.5 + c
            assert out[k * k + idx] == pytest.approx(bilinear_np(
                (1000 * (2 * np.arange(6)[:, None] + 0.5) + 2 * np.arange(8)[None] + 0.5), lx, ly, "zeros"))


def test_correlation_entry_by_hand():
    rng = np.random.default_rng(1)
    c, h, w = 8, 9, 11
    fmaps = rng.normal(size=(1, 2, c, h, w)).astype(np.float32)
    targets = rng.normal(size=(1, 2, 3, c)).astype(np.float32)
    coords = np.array([[[[4.3, 2.7], [0.2, 8.9], [10.6, 3.1]], [[5.5, 5.5], [-1.2, 3.0], [7.0, 0.4]]]], np.float32)
    pyramid = CorrelationPyramid(torch.from_numpy(fmaps), levels=2, radius=1)
    got = pyramid.lookup(torch.from_numpy(targets), torch.from_numpy(coords)).numpy()
    assert got.shape == (1, 2, 3, 2 * 9)
    # 2x2 means with floor semantics: the odd last row and column are dropped.
    pooled = fmaps[0, :, :, : h - 1, : w - 1].reshape(2, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    for s in range(2):
        for n in range(3):
            for level, maps in enumerate((fmaps[0, s], pooled[s])):
                volume = np.tensordot(targets[0, s, n], maps, axes=1) / math.sqrt(c)
                x, y = coords[0, s, n] / 2**level
                for a in (-1, 0, 1):
                    for b in (-1, 0, 1):
                        want = bilinear_np(volume, x + a, y + b, "zeros")
                        idx = level * 9 + (a + 1) * 3 + (b + 1)
                        assert got[0, s, n, idx] == pytest.approx(want, abs=1e-5)


def test_size_one_level_has_no_zero_padding():
    # 3x5 -> 1x2 -> ... : at a size-1 axis every offset reads index 0 (trap T15).
    torch.manual_seed(2)
    fmaps = torch.randn(1, 1, 4, 3, 5)
    targets = torch.randn(1, 1, 1, 4)
    out = CorrelationPyramid(fmaps, levels=2, radius=1).lookup(targets, torch.tensor([[[[2.0, 1.0]]]]))[0, 0, 0]
    pooled = torch.nn.functional.avg_pool2d(fmaps[0], 2)[0]  # [4, 1, 2]
    volume = (targets[0, 0, 0] @ pooled.reshape(4, 2)).numpy() / 2.0  # 1/sqrt(4)
    level1 = out[9:].reshape(3, 3).numpy()  # [x offset, y offset], centre (1.0, 0.5)
    for a in range(3):
        want = bilinear_np(volume[None], 1.0 + a - 1, 0.0, "zeros")
        np.testing.assert_allclose(level1[a], [want] * 3, atol=1e-6)  # constant along the size-1 y axis


def test_correlation_chunking_is_invisible(monkeypatch):
    import vggt_blender.model.track_sampling as sampling

    torch.manual_seed(0)
    fmaps, targets = torch.randn(1, 2, 4, 10, 12), torch.randn(1, 2, 7, 4)
    coords = torch.rand(1, 2, 7, 2) * 10
    whole = CorrelationPyramid(fmaps, 3, 2).lookup(targets, coords)
    monkeypatch.setattr(sampling, "_CORR_CHUNK_ELEMENTS", 2 * 120 * 3)  # 3 queries per chunk
    torch.testing.assert_close(CorrelationPyramid(fmaps, 3, 2).lookup(targets, coords), whole, rtol=0, atol=1e-6)


def test_too_small_map_is_a_clear_error():
    from vggt_blender.errors import VGGTError

    with pytest.raises(VGGTError, match="too small"):
        CorrelationPyramid(torch.zeros(1, 1, 4, 6, 6), levels=4, radius=2)


# ---- embeddings ---------------------------------------------------------------------------------


def test_flow_embedding_closed_form():
    flows = torch.tensor([[[0.0, 0.0], [0.37, -1.25], [12.5, 3.0]]])
    emb = flow_embedding(flows, 16)
    assert emb.shape == (1, 3, 32) and emb.dtype == torch.float32
    freqs = np.arange(0, 16, 2) * (1000.0 / 16)  # 0, 62.5, ..., 437.5
    for n in range(3):
        for axis in range(2):
            block = emb[0, n, axis * 16:(axis + 1) * 16].numpy()
            angle = np.float32(flows[0, n, axis].item()) * freqs.astype(np.float32)
            np.testing.assert_allclose(block[0::2], np.sin(angle), atol=2e-6)
            np.testing.assert_allclose(block[1::2], np.cos(angle), atol=2e-6)
    assert (emb[..., 0] == 0).all() and (emb[..., 1] == 1).all()


def test_position_table_closed_form_and_fractional_sampling():
    dim, h, w = 20, 4, 6
    table = sincos_position_table(dim, h, w)
    assert table.shape == (1, dim, h, w) and table.dtype == torch.float32
    q = dim // 4
    omega = 1.0 / 10000 ** (np.arange(q) / q)
    for y in range(h):
        for x in range(w):
            want = np.concatenate([np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)])
            np.testing.assert_array_equal(table[0, :, y, x].numpy(), want.astype(np.float32))
    # At a fractional position the embedding is the bilinear blend of the float32 table, not sin/cos there.
    got = sample_at_points(table, torch.tensor([[[2.3, 1.6]]]))[0, 0].numpy()
    want = [bilinear_np(table[0, ch].numpy(), 2.3, 1.6, "border") for ch in range(dim)]
    np.testing.assert_allclose(got, want, atol=1e-6)


# ---- tracker behaviour --------------------------------------------------------------------------


def _small_tracker(seed: int = 0) -> TrackerPredictor:
    torch.manual_seed(seed)
    tracker = TrackerPredictor(latent_dim=32, corr_levels=3, corr_radius=4, hidden_size=64).eval()
    with torch.no_grad():  # larger flow head than the official init so tracks actually move
        tracker.updateformer.flow_head.weight.normal_(0, 0.02)
    return tracker


def test_tracker_shapes_frame0_and_equivariance():
    tracker = _small_tracker()
    fmaps = torch.randn(2, 3, 32, 35, 49)
    queries = torch.tensor([[[10.0, 20.0], [50.5, 33.2], [90.0, 60.0], [3.0, 3.0]]]).repeat(2, 1, 1)
    queries[1] += 1.5
    with torch.no_grad():
        tracks, vis, conf = tracker(queries, fmaps, iters=3)
        assert len(tracks) == 3 and tracks[0].shape == (2, 3, 4, 2)
        assert vis.shape == conf.shape == (2, 3, 4)
        assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()
        for entry in tracks:
            assert torch.equal(entry[:, 0], queries)  # bit-exact frame 0
        assert (tracks[-1][:, 1:] - queries[:, None]).abs().max() > 1e-3  # tracks moved
        # Scenes are independent, queries permute, frames 1..S-1 permute (up to amplified rounding, spec §10).
        alone = tracker(queries[:1], fmaps[:1], iters=3)
        torch.testing.assert_close(alone[0][-1], tracks[-1][:1], rtol=0, atol=1e-3)
        perm = torch.tensor([2, 0, 3, 1])
        permuted = tracker(queries[:, perm], fmaps, iters=3)
        torch.testing.assert_close(permuted[0][-1], tracks[-1][:, :, perm], rtol=0, atol=1e-3)
        swapped = tracker(queries, fmaps[:, [0, 2, 1]], iters=3)
        torch.testing.assert_close(swapped[0][-1], tracks[-1][:, [0, 2, 1]], rtol=0, atol=1e-3)


def test_tracker_under_cpu_bf16_autocast():
    # VGGT leaves the track head under the caller's autocast (trap T20): it must run, and stay close to fp32.
    tracker = _small_tracker()
    fmaps = torch.randn(1, 3, 32, 35, 49)
    queries = torch.tensor([[[10.0, 20.0], [50.5, 33.2], [90.0, 60.0]]])
    with torch.no_grad():
        ref_tracks, ref_vis, _ = tracker(queries, fmaps, iters=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tracks, vis, conf = tracker(queries, fmaps.bfloat16(), iters=2)
    assert torch.isfinite(tracks[-1]).all() and torch.isfinite(vis.float()).all() and torch.isfinite(conf.float()).all()
    assert torch.equal(tracks[-1][:, 0], queries)
    assert (tracks[-1].float() - ref_tracks[-1]).abs().max() < 2.0
    assert (vis.float() - ref_vis).abs().max() < 0.1


def test_release_tracker_on_a_pyramid_ending_at_one_pixel():
    # 154x210 input -> 77x105 maps -> ... -> 1x1 at level 6 with the release settings.
    torch.manual_seed(3)
    tracker = TrackerPredictor().eval()
    queries = torch.tensor([[[10.0, 20.0], [200.0, 150.0], [105.3, 77.7]]])
    with torch.no_grad():
        context, _ = tracker.prepare(queries, torch.randn(1, 2, 128, 77, 105))
        assert [lvl.shape[-2:] for lvl in context.pyramid.levels][-1] == (1, 1)
        tracks, vis, conf = tracker(queries, torch.randn(1, 2, 128, 77, 105), iters=4)
    assert len(tracks) == 4 and tracks[-1].shape == (1, 2, 3, 2)
    assert torch.isfinite(tracks[-1]).all() and torch.equal(tracks[-1][:, 0], queries)


def test_integer_and_float64_queries_are_accepted():
    tracker = _small_tracker()
    fmaps = torch.randn(1, 2, 32, 20, 24)
    with torch.no_grad():
        ref = tracker(torch.tensor([[[10.0, 12.0]]]), fmaps, iters=1)[0][-1]
        for q in (torch.tensor([[[10, 12]]]), torch.tensor([[[10.0, 12.0]]], dtype=torch.float64)):
            torch.testing.assert_close(tracker(q, fmaps, iters=1)[0][-1], ref, rtol=0, atol=0)


# ---- state-dict layout at the release configuration --------------------------------------------


def _release_shapes(prefix: str) -> dict[str, list[int]]:
    shapes = json.loads((FIXTURES / "vggt1b_state_dict_shapes.json").read_text())
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def test_tracker_state_dict_matches_release_layout():
    ours = {k: list(v.shape) for k, v in TrackerPredictor().state_dict().items()}
    assert ours == _release_shapes("track_head.tracker.")
    assert sum(p.numel() for p in TrackerPredictor().parameters()) == 43_107_348


def test_track_head_state_dict_matches_release_layout():
    from vggt_blender.model.track_head import TrackHead

    head = TrackHead(dim_in=2048, patch_size=14)
    ours = {k: list(v.shape) for k, v in head.state_dict().items()}
    assert ours == _release_shapes("track_head.")
    assert sum(p.numel() for p in head.parameters()) == 65_941_396


# ---- parity with the official head on the tiny fixture ------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from safetensors.torch import load_file

    from vggt_blender.model import VGGT, VGGTConfig

    model = VGGT(VGGTConfig.load(TINY / "config.json")).eval()
    state = {k: v.to(torch.float32) for k, v in load_file(str(TINY / "weights.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def case0():
    from safetensors.torch import load_file

    cases = load_file(str(TINY / "cases.safetensors"))
    return {k[len("case0."):]: v for k, v in cases.items() if k.startswith("case0.")}


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref).abs().max() / ref.abs().max()).item()


def test_track_outputs_match_official_case0(tiny_model, case0):
    images, queries = case0["images"].float(), case0["query_points"].float()
    with torch.no_grad():
        out = tiny_model(images, query_points=queries)
    errors = {key: _rel(out[key], case0[f"out.{key}"]) for key in ("track", "vis", "conf")}
    print("track head parity (max|ours-ref|/max|ref|):", errors)  # measured: track 4e-8, vis 5e-7, conf 8e-7
    assert out["track"].shape == case0["out.track"].shape and out["vis"].shape == case0["out.vis"].shape
    assert all(err <= 1e-4 for err in errors.values()), errors
    assert torch.equal(out["track"][:, 0], queries)


def test_track_head_iterations_and_bf16_autocast(tiny_model, case0):
    head = tiny_model.track_head
    images, queries = case0["images"].float(), case0["query_points"].float()
    with torch.no_grad():
        tokens, start = tiny_model.aggregator(images, keep_layers=tiny_model.needed_layers(True))
        tracks, vis, conf = head(tokens, images, start, queries)
        assert len(tracks) == 2  # config iters
        assert len(head(tokens, images, start, queries, iters=3)[0]) == 3
        # Caller's bf16 autocast reaches the head (trap T20): it must run and stay near the fp32 result.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_tracks, low_vis, low_conf = head(tokens, images, start, queries)
    assert torch.isfinite(low_tracks[-1]).all() and torch.isfinite(low_vis.float()).all()
    assert torch.isfinite(low_conf.float()).all()
    # Measured: 0.08 px and 0.008 (bf16 rounds sampling coordinates to 8 significant bits).
    assert (low_tracks[-1].float() - tracks[-1]).abs().max() < 0.5
    assert (low_vis.float() - vis).abs().max() < 0.05 and (low_conf.float() - conf).abs().max() < 0.05

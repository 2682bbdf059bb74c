"""geometry/selection.py: which points leave a reconstruction (point cloud and PLY export share it)."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_blender.errors import RequestError
from vggt_blender.geometry import selection
from tests.helpers import synthetic_reconstruction


def test_subsample_is_exact_deterministic_and_within_valid():
    rng = np.random.default_rng(5)
    valid = rng.random((7, 40, 50)) > 0.3
    idx = selection.subsample_mask(valid, 4000)
    assert len(idx) == 4000 and len(np.unique(idx)) == 4000
    assert np.all(np.diff(idx) > 0) and valid.reshape(-1)[idx].all()
    np.testing.assert_array_equal(idx, selection.subsample_mask(valid, 4000))
    # Roughly uniform over the views.
    per_view = np.bincount(idx // (40 * 50), minlength=7) / 4000
    np.testing.assert_allclose(per_view, valid.sum(axis=(1, 2)) / valid.sum(), atol=0.03)
    np.testing.assert_array_equal(selection.subsample_mask(valid, 10**9), np.flatnonzero(valid))
    np.testing.assert_array_equal(selection.subsample_mask(valid, None), np.flatnonzero(valid))
    assert len(selection.subsample_mask(valid, 0)) == 0


@pytest.mark.parametrize("n,k", [(50, 20), (50, 40)])  # both the direct and the complement path
def test_random_subset_is_uniform(n, k):
    counts = np.zeros(n)
    for seed in range(2000):
        picked = selection._random_subset(n, k, np.random.default_rng(seed))
        assert len(picked) == k and len(np.unique(picked)) == k
        counts[picked] += 1
    np.testing.assert_allclose(counts / 2000, k / n, atol=0.05)


@pytest.mark.parametrize("source", ["depth", "point_map"])
def test_threshold_padding_and_non_finite_points_are_dropped(source):
    rec = synthetic_reconstruction(num_images=2, height=10, width=12, seed=4)
    box = np.array([[0, 2, 12, 10], [1, 0, 12, 10]], dtype=np.int32)  # rows 0-1 of photo 0, column 0 of 1: padding
    rec.valid_box = box
    point_map = rec.point_map.copy()
    point_map[1, 5, 5] = np.nan
    rec.point_map = point_map
    depth = rec.depth.copy()
    depth[1, 5, 5] = np.inf
    rec.depth = depth
    conf = rec.depth_conf if source == "depth" else rec.point_map_conf
    picked = selection.select_points(rec, source, min_confidence=5.0)
    # Counted by hand: inside the boxes, conf >= 5, minus the one non-finite point if it passed the threshold.
    inside = np.zeros((2, 10, 12), bool)
    inside[0, 2:, :] = True
    inside[1, :, 1:] = True
    expected = inside & (conf >= 5.0)
    expected[1, 5, 5] = False
    assert 0 < len(picked) == int(expected.sum()) < inside.sum()
    np.testing.assert_array_equal(picked.indices, np.flatnonzero(expected))
    assert picked.confidence.min() >= 5.0 and np.isfinite(picked.xyz).all()
    np.testing.assert_array_equal(picked.views, np.flatnonzero(expected) // 120)
    points = rec.world_points if source == "depth" else rec.point_map
    np.testing.assert_array_equal(picked.xyz, points[expected])
    np.testing.assert_array_equal(picked.rgb, rec.colors[expected])


def test_max_points_draws_from_the_thresholded_points_only():
    rec = synthetic_reconstruction(num_images=3, height=14, width=20, seed=2)
    above = rec.depth_conf >= 6.0
    picked = selection.select_points(rec, "depth", min_confidence=6.0, max_points=100)
    assert len(picked) == 100 and above.reshape(-1)[picked.indices].all()
    again = selection.select_points(rec, "depth", min_confidence=6.0, max_points=100)
    np.testing.assert_array_equal(picked.indices, again.indices)  # fixed seed


def test_unknown_source_is_a_request_error_and_a_value_error():
    rec = synthetic_reconstruction(num_images=1, height=4, width=4)
    for kind in (RequestError, ValueError):
        with pytest.raises(kind, match="unknown point source 'normals'"):
            selection.select_points(rec, "normals")

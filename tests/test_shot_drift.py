"""Long-shot drift end to end on a tiny rendered shot: bpy render -> H.264 (PyAV) -> the product's shot reader ->
plan_chunks + ShotAssembler on stand-in passes (tests/shot_drift.py) -> errors against the rendered truth."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bpy")
pytest.importorskip("av")

from tests import shot_drift as sd  # noqa: E402

COUNT, W, H = 24, 160, 120  # the refinement needs about this much image to find SIFT features in


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    work = tmp_path_factory.mktemp("drift")
    ext, k = sd.render_shot(work / "render", COUNT, W, H, samples=2)
    video = sd.encode_shot(work / "render", COUNT, work / "shot.mp4", W, H)
    depth = sd.true_depth(ext, k, W, H)
    return work, ext, k, video, depth


def test_decoded_frames_are_the_rendered_ones(shot):
    work, _, _, video, _ = shot
    check = sd.decode_shot_frames(video, work / "render")
    assert check.frame_count == COUNT and check.numbers == list(range(COUNT))
    # Each decoded frame is its own render (H.264 at crf 12), clearly not a neighbour's: a one-frame shift in
    # the reader's numbering would swap these.
    assert check.best_match == list(range(COUNT))
    assert check.psnr_own.min() > 25.0
    assert check.psnr_own.min() > np.nanmax(check.psnr_neighbour) + 2.0


def test_without_noise_the_chunks_assemble_to_the_truth(shot):
    _, ext, k, _, depth = shot
    _, _, k_model = sd.model_geometry(k, W, H)
    got = sd.assemble(ext, depth, k_model, 10, 4, sd.Noise(0.0, 0.0, 0.0), seed=3)
    assert [(c.start, c.end, c.overlap) for c in got.chunks] == [(0, 10, 0), (6, 16, 4), (12, 22, 4), (14, 24, 8)]
    err = sd.path_errors(got.extrinsics, ext)
    assert err["centre_max"] < 1e-5 and err["rot_max_deg"] < 1e-3
    for r in got.reports:  # every pass's random scale recovered, by the points and by the depth ratio
        assert r.relative_point_rms < 1e-5 and r.depth_ratio_spread < 1e-5


def test_chunked_path_stays_with_the_single_pass_and_alignment_is_what_holds_it(shot):
    _, ext, k, _, depth = shot
    _, _, k_model = sd.model_geometry(k, W, H)
    noise = sd.Noise()
    chunked = sd.path_errors(sd.assemble(ext, depth, k_model, 10, 4, noise, seed=1).extrinsics, ext)
    single = sd.path_errors(sd.assemble(ext, depth, k_model, COUNT, 0, noise, seed=1).extrinsics, ext)
    loose = sd.path_errors(sd.assemble(ext, depth, k_model, 10, 4, noise, seed=1, align=False).extrinsics, ext)
    print(f"\nchunked {chunked}\nsingle {single}\nunaligned {loose}")
    assert chunked["centre_max"] < 0.05 and chunked["rot_max_deg"] < 2.5 and chunked["drift_max"] < 0.01
    assert chunked["centre_mean"] < 1.5 * single["centre_mean"] + 0.002  # seed 1: 0.0059 against 0.0055
    assert loose["centre_max"] > 5 * chunked["centre_max"] and loose["rot_max_deg"] > 5.0


def test_refining_the_assembled_shot_on_the_decoded_frames_brings_it_closer_to_the_truth(shot, tmp_path):
    pytest.importorskip("pycolmap")
    work, ext, k, video, depth = shot
    sd.decode_shot_frames(video, work / "render", save_dir=tmp_path)
    _, _, k_model = sd.model_geometry(k, W, H)
    asm = sd.assemble(ext, depth, k_model, 10, 4, sd.Noise(), seed=1)
    refined, report = sd.refine_assembly(asm, [tmp_path / f"decoded_{i:04d}.png" for i in range(COUNT)], k_model,
                                         W, H)
    before, after = sd.path_errors(asm.extrinsics, ext), sd.path_errors(refined.extrinsics, ext)
    print(f"\nrefined {len(report.refined_views)}/{COUNT}, {report.mean_error_before:.2f} -> "
          f"{report.mean_error:.2f} px;"
          f" before {before}\nafter {after}")
    assert len(report.refined_views) == COUNT
    assert after["centre_mean"] < 0.5 * before["centre_mean"] and after["rot_mean_deg"] < 0.5 * before["rot_mean_deg"]
    assert np.allclose(refined.intrinsics[:, 0, 0], k[0, 0], rtol=0.02)

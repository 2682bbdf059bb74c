"""A reconstruction file described in a few lines of text, for `python -m vggt_blender info` (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry.lens_check import lens_warnings
from .reconstruction import Reconstruction


def _fmt_seconds(s: Any) -> str:
    try:
        return f"{float(s):.2f} s"
    except (TypeError, ValueError):
        return str(s)


def summarize(rec: Reconstruction) -> str:
    """A human-readable multi-line description: images, provenance, timings, depth and confidence ranges, then
    a `warning: ...` line per implausible camera (geometry/lens_check.py)."""
    h, w = rec.model_hw
    prov = rec.provenance_dict
    lines = [f"{rec.num_images} image{'s' if rec.num_images != 1 else ''}, model input {w}x{h} (width x height)"]
    shown = 10
    for i in range(min(rec.num_images, shown)):
        ow, oh = (int(v) for v in rec.original_sizes[i])
        lines.append(f"  [{i}] {rec.image_names[i]}  {ow}x{oh}  {rec.image_paths[i]}")
    if rec.num_images > shown:
        lines.append(f"  ... and {rec.num_images - shown} more")

    sha = prov.get("checkpoint_sha256")
    ckpt = str(prov.get("checkpoint") or "unknown")
    lines.append(f"checkpoint: {ckpt}" + (f" (sha256 {str(sha)[:12]}...)" if sha else ""))
    family = "VGGT-Omega" if rec.model_family == "vggt-omega" else "VGGT"
    lines.append(f"model: {family}" + (f" ({prov['model']})" if prov.get("model") else "")
                 + ("" if rec.has_point_map else "; no point map (depth point source only)"))
    lines.append(f"device: {prov.get('device') or 'unknown'}, precision: {prov.get('precision') or 'unknown'}, "
                 f"mode: {prov.get('mode') or 'unknown'}")
    timings = prov.get("timings") or {}
    if isinstance(timings, dict) and timings:
        lines.append("timings: " + ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in timings.items()))
    if prov.get("created") or prov.get("package_version"):
        lines.append(f"created: {prov.get('created', 'unknown')} by vggt_blender {prov.get('package_version', '?')}")

    mask = rec.valid_mask
    valid = int(mask.sum())
    lines.append(f"valid pixels: {valid:,} of {mask.size:,}")
    if valid:
        d = rec.depth[mask]
        d = d[np.isfinite(d)]
        if d.size:
            lines.append(f"depth: min {d.min():.4g}, median {np.median(d):.4g}, max {d.max():.4g}")
        confidences = [("depth confidence", rec.depth_conf)]
        if rec.has_point_map:
            confidences.append(("point-map confidence", rec.point_map_conf))
        for label, conf in confidences:
            c = conf[mask]
            c = c[np.isfinite(c)]
            if c.size:
                p = np.percentile(c, [10, 50, 90])
                lines.append(f"{label}: p10 {p[0]:.3g}, p50 {p[1]:.3g}, p90 {p[2]:.3g}, max {c.max():.3g}")
    if rec.extra:
        lines.append("extra arrays: " + ", ".join(f"{k} {list(np.shape(v))}" for k, v in rec.extra.items()))
    lines += [f"warning: {line}" for line in lens_warnings(rec.intrinsics, rec.original_sizes, rec.image_names)]
    return "\n".join(lines)


__all__ = ["summarize"]

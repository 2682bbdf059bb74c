"""Overlapping chunks for shots longer than one forward pass fits in memory (stdlib only).

All frames of one pass attend to each other, so memory grows with the frame count; a long shot is cut into
chunks of `size` views, each sharing `overlap` views with the one before (the views its alignment is
estimated from). The chunk size comes from free memory and a per-frame cost, never a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import SHOT_OVERLAP_DEFAULT as DEFAULT_OVERLAP
MIN_CHUNK = 8  # below this a chunk has too little parallax to be worth a pass


@dataclass(frozen=True)
class Chunk:
    start: int  # first view (index into the selected views), inclusive
    end: int  # exclusive
    overlap: int  # views shared with the previous chunk (0 for the first)

    @property
    def size(self) -> int:
        return self.end - self.start


def plan_chunks(count: int, size: int, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """Chunks covering views 0..count-1: one chunk when `count <= size`; else chunks of exactly `size` views,
    consecutive ones sharing at least `overlap` views (the last one is moved back to stay full size, so it
    may share more)."""
    if count <= 0:
        return []
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    if count <= size:
        return [Chunk(0, count, 0)]
    overlap = max(1, min(int(overlap), size - 1))
    step = size - overlap
    chunks = [Chunk(0, size, 0)]
    while chunks[-1].end < count:
        previous = chunks[-1]
        start = min(previous.start + step, count - size)
        chunks.append(Chunk(start, start + size, previous.end - start))
    return chunks


def frames_per_pass(free_bytes: float, per_frame_bytes: float, fixed_bytes: float = 0.0,
                    safety: float = 0.7) -> int:
    """How many frames one pass can take: (free memory * safety - fixed cost) / per-frame cost."""
    if per_frame_bytes <= 0:
        raise ValueError("the per-frame cost must be positive")
    usable = free_bytes * safety - fixed_bytes
    return max(0, int(usable // per_frame_bytes))


def choose_chunk_size(count: int, free_bytes: float, per_frame_bytes: float, fixed_bytes: float = 0.0,
                      overlap: int = DEFAULT_OVERLAP, safety: float = 0.7, cap: int | None = None) -> int:
    """The chunk size for `count` views: everything in one pass when it fits, else what fits (at least
    MIN_CHUNK and more than the overlap). `cap` bounds it further (e.g. smaller chunks on the CPU)."""
    fits = frames_per_pass(free_bytes, per_frame_bytes, fixed_bytes, safety)
    if cap is not None:
        fits = min(fits, int(cap))
    if fits >= count:
        return count
    return max(fits, MIN_CHUNK, overlap + MIN_CHUNK // 2)

"""Shots: a video file or a numbered image sequence as the input of one reconstruction.

- `selection`  (stdlib): which source frames to use (`--every/--start/--end/--max-frames`), exact frame rates
  and Blender's fps/fps_base; importable in Blender's process.
- `source`     (engine tier: PyAV + numpy + Pillow): probe a shot and decode exactly the numbered frames.
- `chunks`     (stdlib): overlapping chunks for shots longer than one forward pass.
- `align`      (numpy): Sim(3) between overlapping chunks (Umeyama), the chunk path made consistent.
"""

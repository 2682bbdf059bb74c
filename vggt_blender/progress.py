"""Progress bars on stderr for the command line: one bar per stage (loading, preprocessing, inference, writing)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

BAR_WIDTH = 24


class StageProgress:
    """A `progress(stage, fraction, message)` callback that draws one bar per stage.

    On a terminal the bar is redrawn in place; otherwise (a log file, a pipe) only the start and the end of
    each stage are printed, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stage: str | None = None
        self._started = 0.0
        self._last_draw = 0.0
        self._last_fraction = 0.0
        self._last_message = ""

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if stage != self._stage:
            self.finish()
            self._stage, self._started = stage, now
            if not self.interactive:
                self.stream.write(f"{stage}: {message}\n" if message else f"{stage}...\n")
                self.stream.flush()
        self._last_fraction = max(0.0, min(1.0, float(fraction)))
        self._last_message = message
        # Redraw at most 20 times a second, but always draw a completed stage.
        if self.interactive and (now - self._last_draw > 0.05 or self._last_fraction >= 1.0):
            self._draw(now)
            self._last_draw = now

    def _draw(self, now: float) -> None:
        filled = int(round(self._last_fraction * BAR_WIDTH))
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = (f"{self._stage:<13} [{bar}] {self._last_fraction * 100:5.1f}% "
                f"{now - self._started:6.1f}s {self._last_message}")
        # Exactly one column short of the terminal: a full-width line would wrap and break the redraw, and
        # the padding wipes what a longer previous line left behind.
        width = max(20, shutil.get_terminal_size().columns - 1)
        self.stream.write("\r" + line[:width].ljust(width))
        self.stream.flush()

    def finish(self) -> None:
        """End the current stage's line (called on a stage change and at the end of the run)."""
        if self._stage is None or self.quiet:
            return
        elapsed = time.monotonic() - self._started
        if self.interactive:
            self._draw(time.monotonic())
            self.stream.write("\n")
        else:
            self.stream.write(f"{self._stage}: done in {elapsed:.1f}s\n")
        self.stream.flush()
        self._stage = None

    def message(self, line: str) -> None:
        """Print a line (a warning) without breaking a bar drawn in place; shown even when quiet."""
        if self.interactive and self._stage is not None and not self.quiet:
            self.stream.write("\n")
        self.stream.write(line + "\n")
        self.stream.flush()

    def abort(self) -> None:
        """End an in-place bar's line so that an error message starts on its own line."""
        if self.interactive and self._stage is not None and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._stage = None

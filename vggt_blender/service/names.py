"""Safe file names for uploaded photos: no folder parts, no traversal, no hidden or reserved names, no collisions."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_CHARS = 100
# Characters kept as they are; anything else (separators, controls, quotes, colons...) becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ]", re.ASCII)
_RUNS = re.compile(r"_{2,}")
# Names Windows refuses whatever the extension (a client may copy the files there).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def base_name(sent: str) -> str:
    """The last component of a name as a client sent it, whichever separator it used."""
    return re.split(r"[\\/]", sent or "")[-1]


def safe_name(sent: str, fallback: str = "photo") -> str:
    """An ASCII file name made from `sent` that is safe in one folder: never empty, never starting with a dot,
    never "." or "..", no separators; the extension is kept (lower-case)."""
    name = base_name(sent)
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem, ext = _clean(stem) or fallback, _clean(ext).lower()[:16]
    if stem.lower() in _RESERVED:
        stem = f"{stem}_"
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1]
    return f"{stem}.{ext}" if ext else stem


def _clean(part: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode("ascii")
    return _RUNS.sub("_", _UNSAFE.sub("_", ascii_text)).strip(" ._")


class UniqueNames:
    """Hands out names unique within one folder, case-insensitively: `a.jpg`, `a_2.jpg`, `a_3.jpg`..."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def take(self, sent: str, fallback: str = "photo") -> str:
        name = safe_name(sent, fallback)
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, count = name, 1
        while candidate.lower() in self._used:
            count += 1
            candidate = f"{stem}_{count}.{ext}" if ext else f"{stem}_{count}"
        self._used.add(candidate.lower())
        return candidate

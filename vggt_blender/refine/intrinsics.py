"""Is it one physical camera? Identical photo sizes plus one EXIF camera make and model suggest so."""

from __future__ import annotations

from ..io.reconstruction import Reconstruction

EXIF_MAKE, EXIF_MODEL = 0x010F, 0x0110


def _camera_model(path: str) -> str | None:
    """EXIF 'make model' of a photo, None when it has none or Pillow is missing (then no suggestion)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            exif = im.getexif()
    except (OSError, ValueError):
        return None
    make, model = exif.get(EXIF_MAKE), exif.get(EXIF_MODEL)
    if not make and not model:
        return None
    return f"{str(make or '').strip()} {str(model or '').strip()}".strip()


def shared_camera_hint(rec: Reconstruction) -> str | None:
    """A suggestion to use --shared-intrinsics when every photo has the same size and EXIF camera, else None."""
    if rec.num_images < 2 or len({tuple(int(v) for v in s) for s in rec.original_sizes}) != 1:
        return None
    models = {_camera_model(rec.display_paths[i] or rec.image_paths[i]) for i in range(rec.num_images)}
    if len(models) != 1 or None in models:
        return None
    w, h = (int(v) for v in rec.original_sizes[0])
    return (f"note: all {rec.num_images} photos are {w}x{h} from one camera ({models.pop()}); "
            "--shared-intrinsics solves one focal length for all of them, usually more accurately")

"""Make a finished job's reconstruction file the client's: its photo paths point at the client's own copies
of the photos it uploaded (the server's paths mean nothing there), and its upright copies of rotated photos at
where the client will save them, beside its output file. A shot's source (the client's video, or its image
sequence) and frame numbering become the client's too: a sequence's frames were uploaded and numbered by the
client's own choice of frames."""

from __future__ import annotations

import ntpath
import posixpath
from pathlib import Path, PurePath

import numpy as np

from ..io.reconstruction import load_reconstruction, save_reconstruction
from ..io.shot_fields import is_shot, shot_view_names


def client_path_module(path: str):  # noqa: ANN201 - posixpath or ntpath, as the client's path is written
    return ntpath if ("\\" in path or (len(path) > 1 and path[1] == ":")) else posixpath


def client_stem(path: str) -> str:
    module = client_path_module(path)
    return module.splitext(module.basename(path))[0]


def localise(out_file: Path, client_images: list[str], client_output: str, sequence: dict | None = None) -> \
        list[dict]:
    """Rewrite the paths in `out_file` (a reconstruction the worker wrote in the job's out/ folder) for the
    client, in place and atomically; return the files to fetch: `path` (relative to out/) and `save_as`
    (relative to the folder of the client's output), the reconstruction file first.

    `client_images`: one client path per uploaded photo (or sequence frame), or the client's video alone.
    `sequence`: the job's sequence_frames (job_options.py) when the photos are frames of an image sequence."""
    rec = load_reconstruction(out_file)
    shot = is_shot(rec.extra)
    if shot and sequence is None and len(client_images) == 1:
        client_images = client_images * rec.num_images  # every view of a video is a frame of the one file
    if len(client_images) != len(rec.image_paths):
        raise ValueError(f"{len(rec.image_paths)} photos reconstructed but {len(client_images)} uploaded")
    module = client_path_module(client_output)
    client_folder = module.dirname(client_output)
    copies_folder = f"{client_stem(client_output)}_images"
    files = [{"path": out_file.name, "save_as": module.basename(client_output)}]
    display = []
    for source, shown, client in zip(rec.image_paths, rec.display_paths, client_images):
        if shown == source:
            display.append(client)
            continue
        # An upright copy the worker wrote into out/<stem>_images/.
        relative = PurePath(shown).relative_to(out_file.parent).as_posix()
        save_as = f"{copies_folder}/{PurePath(shown).name}"
        files.append({"path": relative, "save_as": save_as})
        display.append(module.join(client_folder, copies_folder, PurePath(shown).name) if client_folder
                       else save_as)
    rec.image_paths = list(client_images)
    rec.display_paths = display
    if shot:
        _localise_shot(rec, client_images[0] if sequence is None else sequence["pattern"], sequence)
    else:
        rec.image_names = [client_stem(p) for p in client_images]
    save_reconstruction(out_file, rec)
    return files


def _localise_shot(rec, source: str, sequence: dict | None) -> None:  # noqa: ANN001 - a Reconstruction
    extra = rec.extra
    if sequence is not None:
        # The server numbered the uploaded frames by the client's frame numbers, so its own count starts at
        # the first uploaded one: shift back to the client's numbering, and say the client's whole sequence.
        extra["frame_numbers"] = np.asarray(extra["frame_numbers"], dtype=np.int64) + int(sequence["numbers"][0])
        extra["source_first_number"] = np.array(int(sequence["first_number"]), dtype=np.int64)
        extra["source_frame_count"] = np.array(int(sequence["frame_count"]), dtype=np.int64)
    extra["source_video"] = np.array(str(source))
    rec.image_names = shot_view_names(client_path_module(source).basename(source), extra["frame_numbers"])
    provenance = rec.provenance_dict
    described = (provenance.get("shot") or {}).get("source")
    if isinstance(described, dict):  # the server's folders mean nothing to the client
        described["path"] = str(source)
        if sequence is not None:
            described.update(first_file_number=int(sequence["first_number"]),
                             frame_count=int(sequence["frame_count"]))
            described.pop("duration", None)  # the span of the uploaded frames, not of the client's sequence
            if sequence.get("selection") is not None:
                provenance["shot"]["selection"] = dict(sequence["selection"])
        rec.provenance = provenance

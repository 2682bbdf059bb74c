"""Make a finished job's reconstruction file the client's: its photo paths point at the client's own copies
of the photos it uploaded (the server's paths mean nothing there), and its upright copies of rotated photos at
where the client will save them, beside its output file."""

from __future__ import annotations

import ntpath
import posixpath
from pathlib import Path, PurePath

from ..io.reconstruction import load_reconstruction, save_reconstruction


def client_path_module(path: str):  # noqa: ANN201 - posixpath or ntpath, as the client's path is written
    return ntpath if ("\\" in path or (len(path) > 1 and path[1] == ":")) else posixpath


def client_stem(path: str) -> str:
    module = client_path_module(path)
    return module.splitext(module.basename(path))[0]


def localise(out_file: Path, client_images: list[str], client_output: str) -> list[dict]:
    """Rewrite the paths in `out_file` (a reconstruction the worker wrote in the job's out/ folder) for the
    client, in place and atomically; return the files to fetch: `path` (relative to out/) and `save_as`
    (relative to the folder of the client's output), the reconstruction file first."""
    rec = load_reconstruction(out_file)
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
    rec.image_names = [client_stem(p) for p in client_images]
    save_reconstruction(out_file, rec)
    return files

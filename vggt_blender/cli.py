"""`python -m vggt_blender reconstruct|info|export-ply|download` (docs/COMMAND_LINE.md).

User-facing errors print one line `error: ...` on stderr and exit 1; Ctrl-C exits 130 and leaves no output.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import RequestError, VGGTError

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vggt_blender",
                                     description="Photos to a 3-D reconstruction with VGGT, and to a Blender scene.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = sub.add_parser("reconstruct", help="run VGGT on photos and write a reconstruction (.npz)",
                         description="Run VGGT on photos (files or folders) and write a reconstruction file.")
    rec.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_FOLDERS")
    rec.add_argument("-o", "--output", help="reconstruction file to write (.npz); default: beside --blend")
    rec.add_argument("--weights", help="checkpoint file (.pt or .safetensors); default: search the usual places")
    rec.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    rec.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    rec.add_argument("--mode", default="crop", choices=("crop", "pad"),
                     help="crop: width 518, centre-crop tall images; pad: longer side 518, pad to a square")
    rec.add_argument("--config", default="vggt-1b", help="model preset (vggt-1b) or a config .json file")
    rec.add_argument("--fast-path", default="auto", choices=("auto", "on", "off"),
                     help="memory-lean inference: auto = on for CUDA with bf16/fp16 (hundreds of photos fit), "
                          "off elsewhere")
    rec.add_argument("--download", action="store_true",
                     help="download the official checkpoint if none is found (prints its licence first)")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")
    rec.add_argument("--server", metavar="URL",
                     help="run on a reconstruction server (python -m vggt_blender serve) instead of here; "
                          "its token from $VGGT_SERVER_TOKEN")

    scene = rec.add_argument_group("Blender scene (--blend; needs the bpy module)")
    scene.add_argument("--blend", help="also build the Blender scene and save it to this .blend file")
    scene.add_argument("--no-cameras", action="store_true", help="no camera objects")
    scene.add_argument("--no-points", action="store_true", help="no point cloud")
    scene.add_argument("--no-planes", action="store_true", help="no depth-textured planes")
    scene.add_argument("--plane-step", type=_positive_int, help="depth planes: one vertex every K model pixels")
    scene.add_argument("--max-points", type=_positive_int, help="subsample the point cloud to at most N points")
    scene.add_argument("--min-confidence", type=float, help="initial confidence threshold (raw confidence >= 1)")
    scene.add_argument("--scale", type=_positive_float, help="scene units per reconstruction unit")
    scene.add_argument("--camera-mode", choices=("per_photo", "animated", "both"))
    scene.add_argument("--point-source", choices=("depth", "point_map"))

    info = sub.add_parser("info", help="describe a reconstruction file")
    info.add_argument("file")

    ply = sub.add_parser("export-ply", help="write a reconstruction's points to a PLY file")
    ply.add_argument("file", help="reconstruction file (.npz)")
    ply.add_argument("ply", help="PLY file to write")
    ply.add_argument("--point-source", default="depth", choices=("depth", "point_map"))
    ply.add_argument("--min-confidence", type=float, default=1.0, help="drop points below this confidence")
    ply.add_argument("--max-points", type=_positive_int, help="random subset of at most N points")

    dl = sub.add_parser("download", help="download an official checkpoint")
    dl.add_argument("--checkpoint", default="vggt-1b", choices=("vggt-1b", "vggt-1b-commercial"))
    dl.add_argument("--token", help="Hugging Face access token (needed for the gated commercial checkpoint)")
    dl.add_argument("--dest", help="folder to save it in (default: the standard weights folder)")
    dl.add_argument("-q", "--quiet", action="store_true")

    srv = sub.add_parser("serve", help="run the reconstruction service (HTTP API; needs requirements/service.txt)",
                         description="Serve the reconstruction API (docs/SERVICE.md).")
    from .service.server import add_arguments  # argparse only: the service's packages load in cmd_serve

    add_arguments(srv)
    return parser


def scene_options_from_args(args: argparse.Namespace) -> Any:
    """Map the scene flags onto SceneOptions; flags left out keep SceneOptions' defaults."""
    from .options import SceneOptions

    values: dict[str, Any] = {}
    if args.no_cameras:
        values["create_cameras"] = False
    if args.no_points:
        values["create_point_cloud"] = False
    if args.no_planes:
        values["create_depth_planes"] = False
    for flag, field in (("plane_step", "plane_step"), ("max_points", "max_points"),
                        ("min_confidence", "min_confidence"), ("scale", "scale"),
                        ("camera_mode", "camera_mode"), ("point_source", "point_source")):
        value = getattr(args, flag)
        if value is not None:
            values[field] = value
    return SceneOptions.from_dict(values)


def _byte_progress(bar: Any) -> Callable[[float, str], None]:
    return lambda fraction, message: bar("downloading", fraction, message)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .progress import StageProgress

    if not args.output and not args.blend:
        raise RequestError("give an output file with -o scene.npz (and/or --blend scene.blend)")
    blend = Path(args.blend).expanduser().resolve() if args.blend else None
    if blend is not None and blend.suffix.lower() != ".blend":
        raise RequestError(f"--blend must name a .blend file: {blend}", file=str(blend))
    output = Path(args.output).expanduser().resolve() if args.output else blend.with_suffix(".npz")
    options = scene_options_from_args(args)  # check the scene flags before the long run
    if blend is not None and importlib.util.find_spec("bpy") is None:
        # Say so now, not after minutes of inference.
        raise RequestError(f"--blend needs the bpy module (pip install bpy, matching this Python), which this "
                           f"Python ({sys.executable}) lacks: {blend}", file=str(blend))
    npz_is_byproduct = blend is not None and not args.output
    npz_existed = output.exists()

    if args.server and (args.weights or args.download):
        raise RequestError("--weights and --download are the server's own: leave them out with --server")
    bar = StageProgress(quiet=args.quiet)
    weights = args.weights
    if args.download and weights is None:
        from .errors import WeightsNotFoundError
        from .weights.discovery import check_weights_env, resolve_weights

        check_weights_env()  # a $VGGT_WEIGHTS naming a missing file is reported, not "fixed" by a 5 GB download
        try:
            resolve_weights(None)
        except WeightsNotFoundError:
            from .weights.download import download_named_checkpoint

            weights = str(download_named_checkpoint("vggt-1b", say=bar.message, progress=_byte_progress(bar)))

    try:
        if args.server:
            summary = _reconstruct_on_server(args, output, bar)
        else:
            from .engine.inference import reconstruct_to_file

            rec = reconstruct_to_file(args.inputs, output, progress=bar, weights=weights, device=args.device,
                                      precision=args.precision, mode=args.mode, config=args.config,
                                      fast_path=args.fast_path, warn=lambda line: bar.message(f"warning: {line}"))
            summary = None
    except BaseException:
        bar.abort()
        raise
    written = [str(output)]
    if blend is not None:
        try:
            bar("writing", 0.0, str(blend))
            from .extension_package import scene_module

            write_blend = scene_module("blend_file").write_blend  # imports bpy: only when asked for

            write_blend(str(output), str(blend), options)
            bar("writing", 1.0, str(blend))
        except BaseException:
            bar.abort()
            if npz_is_byproduct and not npz_existed:
                # The user asked for a .blend only: the .npz was a step towards it.
                Path(output).unlink(missing_ok=True)
                _err(f"removed {output} (the .blend was not written)")
            else:
                _err(f"{output} was written and stays; only the .blend step failed")
            raise
        written.append(str(blend))
    bar.finish()
    if summary is None:
        from .engine.inference import result_summary

        summary = result_summary(rec, output)
    width, height = summary["model_size"]
    total = sum(summary["timings"].values())
    _err(f"wrote {' and '.join(written)}: {summary['images']} image(s) at {width}x{height}, "
         f"{summary['points']:,} points, {total:.1f} s on {summary['device']}, {summary['precision']}")
    return EXIT_OK


def _reconstruct_on_server(args: argparse.Namespace, output: Path, bar: Any) -> dict:
    """The job on a reconstruction server (--server; token from $VGGT_SERVER_TOKEN); the result lands at
    `output` only once complete. Ctrl-C cancels the job on the server. Returns the result's summary."""
    import os
    import time

    from .jobs.remote import RemoteJob
    from .service.config import TOKEN_ENV

    request = {"images": list(args.inputs), "output": str(output), "precision": args.precision, "mode": args.mode,
               "config": args.config, "fast_path": args.fast_path}
    job = RemoteJob(args.server, os.environ.get(TOKEN_ENV) or None, request)
    job.start()
    try:
        while True:
            for event in job.poll():
                if event.get("type") == "progress":
                    bar(event["stage"], event["fraction"], event.get("message", ""))
                elif event.get("type") == "warning":
                    bar.message(f"warning: {event.get('message', '')}")
            if job.finished:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        job.cancel()
        job.wait(30)
        raise
    if job.state != "done":
        raise VGGTError(job.error_message or job.state, job.error_file)
    return job.result["summary"]


def cmd_info(args: argparse.Namespace) -> int:
    from .io.reconstruction import load_reconstruction, summarize

    print(summarize(load_reconstruction(args.file)))
    return EXIT_OK


def cmd_export_ply(args: argparse.Namespace) -> int:
    from .io.ply import export_ply
    from .io.reconstruction import load_reconstruction

    count = export_ply(load_reconstruction(args.file), args.ply, args.point_source, args.min_confidence,
                       args.max_points)
    _err(f"wrote {args.ply}: {count:,} points")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from .weights.download import download_named_checkpoint
    from .progress import StageProgress

    bar = StageProgress(quiet=args.quiet)
    try:
        # --dest names a folder (created if missing): the trailing "/" tells download_named_checkpoint so.
        path = download_named_checkpoint(args.checkpoint, f"{args.dest}/" if args.dest else None,
                                         token=args.token, say=bar.message, progress=_byte_progress(bar))
    except BaseException:
        bar.abort()
        raise
    bar.finish()
    print(path)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .service.server import main as serve_main

    return serve_main(args)


COMMANDS = {"reconstruct": cmd_reconstruct, "info": cmd_info, "export-ply": cmd_export_ply,
            "download": cmd_download, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except VGGTError as exc:
        _err(f"error: {exc.message}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        # reconstruct_to_file and the atomic writer have already removed what this run created.
        _err("\ninterrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        # Last resort: a file-system error no module turned into a VGGTError still gets one readable line.
        _err(f"error: {os_error_line(exc)}")
        return EXIT_ERROR


def os_error_line(exc: OSError) -> str:
    """'<filename>: <strerror>' for an OSError (falling back to its text when it names no file)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {what}" if exc.filename else what

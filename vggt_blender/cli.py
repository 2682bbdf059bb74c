"""`python -m vggt_blender reconstruct|info|export-ply|download` (docs/COMMAND_LINE.md).

User-facing errors print one line `error: ...` on stderr and exit 1; Ctrl-C exits 130, SIGTERM 143 and SIGHUP
129 (128 + the signal), each after one line and leaving no output of the interrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from . import options as opt
from .errors import RequestError, VGGTError
from .options import ALIGN_METHODS, DEFAULT_ALIGN_METHOD, EXIT_ERROR, EXIT_OK

EXIT_INTERRUPTED = opt.EXIT_CANCELLED  # Ctrl-C

# Signals that end a run the way Ctrl-C does (its clean-up runs), with the exit status 128 + the signal.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread: every clean-up written for Ctrl-C runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_unwinding = False  # a signal is unwinding the command: further ones are ignored until it is over


def _on_terminating_signal(signum: int, _frame: Any) -> None:
    # A second signal must not cut the clean-up short. Ignored here rather than by SIG_IGN: a signal pending when
    # the handler becomes SIG_IGN makes Python print "Signal 15 ignored due to race condition".
    global _unwinding
    if _unwinding:
        return
    _unwinding = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextlib.contextmanager
def _terminating_signals_clean_up() -> Any:
    """While the command runs, SIGTERM/SIGHUP raise Terminated (Ctrl-C KeyboardInterrupt, as before); the
    previous handlers come back after."""
    global _unwinding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _unwinding = False
    previous = {s: signal.getsignal(s) for s in TERMINATING_SIGNALS + (signal.SIGINT,)}
    for signum in TERMINATING_SIGNALS + (signal.SIGINT,):
        keep = previous[signum] is signal.SIG_IGN or (  # nohup's "ignore SIGHUP" is kept, and so is a
            signum == signal.SIGINT and previous[signum] is not signal.default_int_handler)  # caller's Ctrl-C
        if not keep:
            signal.signal(signum, _on_terminating_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
    rec.add_argument("inputs", nargs="+", metavar="PHOTOS_FOLDERS_OR_SHOT")
    rec.add_argument("-o", "--output", help="reconstruction file to write (.npz); default: beside --blend")
    rec.add_argument("--model", default=opt.DEFAULT_MODEL, choices=opt.CHECKPOINT_NAMES,
                     help="which model: vggt-1b (default), vggt-1b-commercial, vggt-omega-1b-512, "
                          "vggt-omega-1b-256-text; with --weights and no --model the file's keys decide")
    rec.add_argument("--weights", help="checkpoint file (.pt or .safetensors) of either model family; "
                                       "default: search the usual places for --model's checkpoint")
    rec.add_argument("--device", default=opt.DEFAULT_DEVICE, choices=opt.DEVICES)
    rec.add_argument("--precision", default=opt.DEFAULT_PRECISION, choices=opt.PRECISIONS,
                     help="int8: the aggregator's Linear weights quantised to int8 (CPU only)")
    rec.add_argument("--mode", default=opt.DEFAULT_MODE, choices=opt.ALL_MODES,
                     help="VGGT: crop (width 518, centre-crop tall images) or pad (longer side 518, pad to a "
                          "square); VGGT-Omega: balanced (about 32x32 patches at the photo's aspect) or max_size "
                          "(longer side 512); crop/pad given to VGGT-Omega mean balanced/max_size")
    rec.add_argument("--config", default=opt.DEFAULT_CONFIG,
                     help="model preset of either family (vggt-1b, vggt-omega-1b-512, ...) or a config .json file; "
                          "default: --model's, else the checkpoint's own")
    rec.add_argument("--fast-path", default=opt.DEFAULT_FAST_PATH, choices=opt.FAST_PATH_CHOICES,
                     help="memory-lean inference: auto = on for CUDA with bf16/fp16 (hundreds of photos fit), "
                          "off elsewhere")
    rec.add_argument("--download", action="store_true",
                     help="download the official checkpoint if none is found (prints its licence first)")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")
    rec.add_argument("--server", metavar="URL",
                     help="run on a reconstruction server (python -m vggt_blender serve) instead of here; "
                          "its token from $VGGT_SERVER_TOKEN")
    rec.add_argument("--compress", action="store_true",
                     help="zip-deflate the .npz: lossless, about a quarter smaller, writing it is much slower")

    rec.add_argument("--align", default=DEFAULT_ALIGN_METHOD, choices=ALIGN_METHODS,
                     help="stand the scene upright: floor plane, cameras' up, auto (floor if found), none")
    shot = rec.add_argument_group("Shots (one video file, or an image sequence: a folder or shot.%%04d.png)")
    shot.add_argument("--every", type=_positive_int, help="every N-th frame (default 1)")
    shot.add_argument("--start", type=int, help="first frame number (0-based, the source's numbering)")
    shot.add_argument("--end", type=int, help="last frame number (inclusive)")
    shot.add_argument("--max-frames", type=_positive_int, help="at most M frames, spread over the selection")
    shot.add_argument("--chunk-size", type=_positive_int,
                      help="frames per forward pass for long shots (default: from free memory)")
    shot.add_argument("--overlap", type=_positive_int, help="frames shared by consecutive chunks (default 20)")
    shot.add_argument("--fps", type=_positive_float, help="frame rate of an image sequence (default 24)")
    shot.add_argument("--sequence", action="store_true", help="take the folder as one image sequence")

    scene = rec.add_argument_group("Blender scene (--blend; needs the bpy module)")
    scene.add_argument("--blend", help="also build the Blender scene and save it to this .blend file")
    scene.add_argument("--no-cameras", action="store_true", help="no camera objects")
    scene.add_argument("--no-points", action="store_true", help="no point cloud")
    scene.add_argument("--no-planes", action="store_true", help="no depth-textured planes")
    scene.add_argument("--plane-step", type=_positive_int, help="depth planes: one vertex every K model pixels")
    scene.add_argument("--max-points", type=_positive_int, help="subsample the point cloud to at most N points")
    scene.add_argument("--min-confidence", type=float, help="initial confidence threshold (raw confidence >= 1)")
    scene.add_argument("--scale", type=_positive_float, help="scene units per reconstruction unit")
    scene.add_argument("--camera-mode", choices=opt.CAMERA_MODES)
    scene.add_argument("--point-source", choices=opt.POINT_SOURCES)

    add_align_parser(sub)

    info = sub.add_parser("info", help="describe a reconstruction file")
    info.add_argument("file")

    ply = sub.add_parser("export-ply", help="write a reconstruction's points to a PLY file")
    ply.add_argument("file", help="reconstruction file (.npz)")
    ply.add_argument("ply", help="PLY file to write")
    ply.add_argument("--point-source", default=opt.SceneOptions.point_source, choices=opt.POINT_SOURCES)
    ply.add_argument("--min-confidence", type=float, default=1.0, help="drop points below this confidence")
    ply.add_argument("--max-points", type=_positive_int, help="random subset of at most N points")

    from .options import REFINE_CAMERA_MODELS

    ref = sub.add_parser("refine", help="refine a reconstruction's cameras by bundle adjustment (needs pycolmap)",
                         description="Match features in the photos themselves, guided by the file's cameras, and "
                                     "bundle-adjust the cameras; views that cannot be improved keep theirs.")
    ref.add_argument("file", help="reconstruction file (.npz)")
    ref.add_argument("-o", "--output", required=True, help="refined reconstruction file to write (.npz)")
    ref.add_argument("--shared-intrinsics", action="store_true",
                     help="one focal length (and distortion) for all photos: one physical camera")
    ref.add_argument("--camera-model", default="pinhole", choices=REFINE_CAMERA_MODELS,
                     help="lens model solved: pinhole (default), simple_radial (k), opencv (k1 k2 p1 p2, fx fy)")
    ref.add_argument("--refine-principal-point", action="store_true", help="also solve the principal point")
    ref.add_argument("--separate-focal", action="store_true", help="solve fx and fy apart (pinhole)")
    ref.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")

    col = sub.add_parser("export-colmap", help="write a reconstruction as a COLMAP sparse model with its photos")
    col.add_argument("file", help="reconstruction file (.npz)")
    col.add_argument("out_dir", help="folder to write images/ and sparse/0/ into")
    col.add_argument("--text", action="store_true", help="COLMAP's text format instead of binary")

    dl = sub.add_parser("download", help="download an official checkpoint")
    dl.add_argument("--model", "--checkpoint", dest="checkpoint", default=opt.DEFAULT_CHECKPOINT,
                    choices=opt.CHECKPOINT_NAMES, help="which checkpoint (--checkpoint is the older name)")
    dl.add_argument("--token", help="Hugging Face access token (needed for the gated checkpoints: commercial, "
                                    "VGGT-Omega)")
    dl.add_argument("--dest", help="folder to save it in (default: the standard weights folder)")
    dl.add_argument("-q", "--quiet", action="store_true")

    srv = sub.add_parser("serve", help="run the reconstruction service (HTTP API; needs requirements/service.txt)",
                         description="Serve the reconstruction API (docs/SERVICE.md).")
    from .service.server import add_arguments  # argparse only: the service's packages load in cmd_serve

    add_arguments(srv)
    return parser


def scene_options_from_args(args: argparse.Namespace) -> Any:
    """Map the scene flags onto SceneOptions; flags left out keep SceneOptions' defaults."""
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
    return opt.SceneOptions.from_dict(values)


def shot_options_from_args(args: argparse.Namespace) -> Any:
    from .options import SHOT_OVERLAP_DEFAULT, ShotOptions

    return ShotOptions(every=args.every, start=args.start, end=args.end, max_frames=args.max_frames,
                       chunk_size=args.chunk_size, overlap=args.overlap or SHOT_OVERLAP_DEFAULT, fps=args.fps,
                       sequence=args.sequence)


def _byte_progress(bar: Any) -> Callable[[float, str], None]:
    return lambda fraction, message: bar("downloading", fraction, message)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .progress import StageProgress

    if not args.output and not args.blend:
        raise RequestError("give an output file with -o scene.npz (and/or --blend scene.blend)")
    blend = Path(args.blend).expanduser().resolve() if args.blend else None
    if blend is not None and blend.suffix.lower() != ".blend":
        raise RequestError(f"--blend must name a .blend file: {blend}", file=str(blend))
    from .io.output_paths import resolve_output

    output = resolve_output(args.output if args.output else blend.with_suffix(".npz"), suffix=None)
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
    from .weights.download import ensure_weights

    weights = ensure_weights(args.weights, args.download, args.model or opt.DEFAULT_CHECKPOINT, say=bar.message,
                             progress=_byte_progress(bar))

    try:
        if args.server:
            summary = _reconstruct_on_server(args, output, bar)
            rec = None  # the server has it; the downloaded file is checked when it is opened
            if args.align != "none":  # stood upright here as a local run would be (numpy only, no torch)
                from .io.reconstruction import load_reconstruction

                _align_after_reconstruct(load_reconstruction(output), output, args.align, bar,
                                         compress=args.compress)
        else:
            from .engine.inference import reconstruct_to_file

            rec = reconstruct_to_file(args.inputs, output, progress=bar, weights=weights, model_name=args.model,
                                      device=args.device,
                                      precision=args.precision, mode=args.mode, config=args.config,
                                      fast_path=args.fast_path, compress=args.compress,
                                      warn=lambda line: bar.message(f"warning: {line}"),
                                      **shot_options_from_args(args).to_request())
            summary = None
            if args.align != "none" and rec is not None:
                _align_after_reconstruct(rec, output, args.align, bar, compress=args.compress)
    except BaseException:
        bar.abort()
        raise
    written = [str(output)]
    if blend is not None:
        try:
            bar("writing", 0.0, str(blend))
            from .extension_package import scene_module

            blend_file = scene_module("blend_file")  # imports bpy: only when asked for

            blend_file.write_blend(str(output), str(blend), options)
            blend_note = blend_file.blend_compatibility_note(blend, output)  # which Blender opens it
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
    if rec is not None:
        from .geometry.lens_check import lens_warnings

        for line in lens_warnings(rec.intrinsics, rec.original_sizes, rec.image_names):
            _err(f"warning: {line}")
    width, height = summary["model_size"]
    total = sum(summary["timings"].values())
    _err(f"wrote {' and '.join(written)}: {summary['images']} image(s) at {width}x{height}, "
         f"{_points_text(summary['points'], options if blend is not None else None)}, {total:.1f} s on "
         f"{summary['device']}, {summary['precision']}")
    if blend is not None:
        _err(blend_note)
    return EXIT_OK


def _points_text(candidates: int, scene: Any = None) -> str:
    """The candidate points of the file and, with a .blend (`scene`: its SceneOptions), how many its point
    cloud holds: at most Max Points of them."""
    text = f"{candidates:,} candidate points"
    if scene is None:
        return text
    if not scene.create_point_cloud:
        return text + " (no point cloud in the .blend)"
    held = candidates if scene.max_points is None else min(candidates, int(scene.max_points))
    return text + f", {held:,} in the .blend's point cloud (Max Points {int(scene.max_points):,})" \
        if scene.max_points is not None else text + f", all {held:,} in the .blend's point cloud"


def add_align_parser(sub: Any) -> None:
    al = sub.add_parser("align", help="stand a reconstruction upright (writes its alignment)",
                        description="Find the floor or the cameras' up and store the alignment in the file.")
    al.add_argument("file", help="reconstruction file (.npz)")
    al.add_argument("-o", "--output", required=True, help="aligned reconstruction file to write (may be FILE)")
    al.add_argument("--up", default=DEFAULT_ALIGN_METHOD, choices=ALIGN_METHODS,
                    help="floor: the dominant floor plane; cameras: perpendicular to the cameras' x axes; "
                         "auto: floor if one is found, else cameras; none: the plain axis change")


def align_file(rec: Any, output: str | Path, method: str, source: str | Path | None = None,
               provenance: str | None = None, compress: bool = False) -> str:
    """Compute `rec`'s alignment by `method`, set it and save `rec` (with `provenance` when given) to `output`
    atomically; return what was found. A failed fit raises AlignmentError naming `source` (default `output`)
    and writes nothing."""
    import dataclasses

    from .geometry.alignment import AlignmentError, align_reconstruction
    from .io.reconstruction import save_reconstruction

    try:
        result = align_reconstruction(rec, method)
    except AlignmentError as exc:
        named = str(source or output)
        raise AlignmentError(f"{named}: {exc.message}", file=named) from exc
    rec.alignment = result.matrix
    save_reconstruction(output, rec if provenance is None else dataclasses.replace(rec, provenance=provenance),
                        compress=compress)
    return result.describe()


def _align_after_reconstruct(rec: Any, output: Path, method: str, bar: Any, compress: bool = False) -> None:
    import json

    from .geometry.alignment import AlignmentError

    # The file as first written: the "writing" timing reconstruct_to_file adds afterwards is in memory only.
    provenance = rec.provenance_dict
    provenance.get("timings", {}).pop("writing", None)
    try:
        found = align_file(rec, output, method, provenance=json.dumps(provenance, sort_keys=True), compress=compress)
        bar.message(f"aligned: {found}")
    except AlignmentError as exc:  # the reconstruction itself is good: keep it, unaligned
        bar.message(f"warning: {exc.message}; {output} keeps the plain axis change")


def cmd_align(args: argparse.Namespace) -> int:
    from .io.reconstruction import load_reconstruction

    found = align_file(load_reconstruction(args.file), args.output, args.up, source=args.file)
    _err(f"wrote {args.output}: {found}")
    return EXIT_OK


def _reconstruct_on_server(args: argparse.Namespace, output: Path, bar: Any) -> dict:
    """The job on a reconstruction server (--server; token from $VGGT_SERVER_TOKEN); the result lands at
    `output` only once complete. Ctrl-C cancels the job on the server. Returns the result's summary."""
    import os
    import time

    from .jobs.remote import RemoteJob
    from .service.config import TOKEN_ENV

    request = {"images": list(args.inputs), "output": str(output), "precision": args.precision, "mode": args.mode,
               "config": args.config, "fast_path": args.fast_path, **shot_options_from_args(args).to_request()}
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
    from .io.reconstruction import load_reconstruction
    from .io.summary import summarize

    print(summarize(load_reconstruction(args.file)))
    return EXIT_OK


def cmd_export_ply(args: argparse.Namespace) -> int:
    from .io.ply import export_ply
    from .io.reconstruction import load_reconstruction

    rec = load_reconstruction(args.file)
    from .geometry.selection import available_point_sources, family_name

    if args.point_source not in available_point_sources(rec):
        raise RequestError(f"{args.file}: has no point map (a {family_name(rec)} reconstruction); use "
                           f"--point-source depth", file=args.file)
    count = export_ply(rec, args.ply, args.point_source, args.min_confidence, args.max_points)
    _err(f"wrote {args.ply}: {count:,} points")
    return EXIT_OK


def cmd_refine(args: argparse.Namespace) -> int:
    from .io.reconstruction import load_reconstruction, save_reconstruction
    from .options import RefineOptions
    from .progress import StageProgress
    from .refine import refine_reconstruction

    rec = load_reconstruction(args.file)
    options = RefineOptions(camera_model=args.camera_model, shared_intrinsics=args.shared_intrinsics,
                            refine_principal_point=args.refine_principal_point, separate_focal=args.separate_focal)
    bar = StageProgress(quiet=args.quiet)
    try:
        refined, report = refine_reconstruction(rec, options, progress=bar)
    finally:
        bar.finish()
    if report.suggestion:
        _err(report.suggestion)
    for line in report.messages:
        _err(f"warning: {line}")
    save_reconstruction(args.output, refined)
    _err(f"wrote {args.output}: {len(report.refined_views)}/{rec.num_images} cameras refined, mean error "
         f"{report.mean_error:.2f} px (was {report.mean_error_before:.2f} px), worst {report.max_error:.2f} px, "
         f"{report.points:,} points, {report.seconds:.1f} s")
    return EXIT_OK


def cmd_export_colmap(args: argparse.Namespace) -> int:
    from .io.colmap import FRAME, export_colmap
    from .io.reconstruction import load_reconstruction

    model = export_colmap(load_reconstruction(args.file), args.out_dir, text=args.text)
    _err(f"wrote {args.out_dir}: {len(model.names)} images, {len(model.cameras)} cameras, "
         f"{len(model.xyz):,} points, in {FRAME}")
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


COMMANDS = {"reconstruct": cmd_reconstruct, "align": cmd_align, "info": cmd_info, "export-ply": cmd_export_ply,
            "refine": cmd_refine, "export-colmap": cmd_export_colmap, "download": cmd_download, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _terminating_signals_clean_up():
            return COMMANDS[args.command](args)
    except VGGTError as exc:
        _err(f"error: {exc.message}")
        return EXIT_ERROR
    except Terminated as exc:
        # Cleaned up as for Ctrl-C on the way here.
        _err(f"\nterminated by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
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

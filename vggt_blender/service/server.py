"""`python -m vggt_blender serve`: the service on one machine, under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import AsyncIterator

from ..errors import RequestError
from .config import DEFAULT_PORT, TOKEN_ENV, ServiceConfig, check_config, default_data_dir, is_loopback, read_token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--token-file", help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--weights", help="checkpoint file; default: search the usual places")
    parser.add_argument("--model", default="vggt-1b", help="model preset or config .json (default vggt-1b)")
    parser.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                        help="auto, cpu, cuda, cuda:N, mps; repeat for one runner per GPU (default auto)")
    parser.add_argument("--max-upload-mb", type=float, default=2048.0, help="largest upload (default 2048)")
    parser.add_argument("--max-photos", type=int, default=1000, help="most photos in one job (default 1000)")
    parser.add_argument("--max-queue", type=int, default=16, help="most jobs waiting (default 16)")
    parser.add_argument("--keep-minutes", type=float, default=24 * 60.0,
                        help="how long finished jobs' files are kept (default 1440)")
    parser.add_argument("--data-dir", help=f"folder for uploads and results (default {default_data_dir()})")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the worker (needs torch)")


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    config = ServiceConfig(host=args.host, port=args.port, token=read_token(args.token_file), weights=args.weights,
                           model=args.model, devices=args.devices or ["auto"], max_upload_mb=args.max_upload_mb,
                           max_photos=args.max_photos, max_queue=args.max_queue, keep_minutes=args.keep_minutes,
                           data_dir=Path(args.data_dir).expanduser() if args.data_dir else default_data_dir(),
                           python=args.python)
    check_config(config)
    return config


def serve(config: ServiceConfig) -> int:
    try:
        import uvicorn
    except ImportError:
        raise RequestError("the service needs its extra packages: pip install -r requirements/service.txt") from None
    from .app import create_app
    from .service import Service

    service = Service(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = create_app(lambda: service)
    app.router.lifespan_context = lifespan
    if not config.token:
        sys.stderr.write(f"note: no token set: anyone on this machine can use the server ({config.host} only)\n")
    # h11 and asyncio: the pure-Python pair every install has, so the server behaves the same whether or not
    # uvicorn's optional speed-ups (httptools, uvloop: Ray Serve brings them) are installed.
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=10, http="h11",
                                           loop="asyncio"))
    _announce_port(server, config)
    server.run()
    return 0


def _announce_port(server, config: ServiceConfig) -> None:  # noqa: ANN001 - a uvicorn.Server
    """Print one line with the address once listening (port 0 picks a free port: tests read it here)."""
    startup = server.startup

    async def startup_and_say(sockets=None) -> None:  # noqa: ANN001
        await startup(sockets=sockets)
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                sys.stderr.write(f"serving on http://{shown}:{port} (data in {config.data_dir})\n")
                sys.stderr.flush()
                return

    server.startup = startup_and_say


def main(args: argparse.Namespace) -> int:
    return serve(config_from_args(args))


__all__ = ["add_arguments", "config_from_args", "serve", "main", "is_loopback"]

"""The same API on many GPUs with Ray Serve: `python -m vggt_blender.service.ray_app [serve's flags]
[--address ADDR] [--min-replicas N] [--max-replicas M] [--num-gpus 1 | --num-cpus K]` (requirements/ray.txt).

Every replica is the app of app.py (`@serve.ingress`) with its own Service: one runner on the replica's GPU
(Ray sets CUDA_VISIBLE_DEVICES; the device is "cuda"), one worker with the model loaded once. Job state is not
in any replica: it lives in the data folder (store.py), which every replica shares (one machine: a local folder;
a cluster: a shared file system mounted at the same path). So any replica answers any call, and the replicas'
runners take the queued jobs in arrival order, each as soon as it is free: jobs spread over the replicas without
routing a job's calls to the replica that runs it, and a job of a replica that dies is failed by the others
(never served half-written). Autoscaling (Ray's, between --min-replicas and --max-replicas) follows the
requests in flight, event streams included.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import threading
from typing import Any

from .config import ServiceConfig
from .service import Service

_REPLICA: dict[str, Service] = {}


def replica_service() -> Service:
    """The Service of the replica this process is (module-level, so that the app refers to it by name)."""
    return _REPLICA["service"]


def _set_replica_service(service: Service) -> None:
    _REPLICA["service"] = service


def _stop_replica_service() -> None:
    service = _REPLICA.pop("service", None)
    if service is not None:
        service.stop()


def deployment(config: ServiceConfig, *, min_replicas: int = 1, max_replicas: int = 1, num_gpus: float = 1.0,
               num_cpus: float | None = None, initial_replicas: int | None = None) -> Any:
    """The bound Ray Serve application: replicas of the API app, each with one runner (GPU or CPU)."""
    from ray import serve

    from .app import create_app

    app = create_app(replica_service, title="VGGT reconstruction service (Ray Serve)")
    device = "cuda" if num_gpus else (config.devices[0] if config.devices else "cpu")
    replica_config = dataclasses.replace(config, devices=[device])
    actor_options: dict[str, Any] = {"num_gpus": num_gpus}
    if num_cpus is not None:
        actor_options["num_cpus"] = num_cpus
    autoscaling = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                   "initial_replicas": initial_replicas or min_replicas, "target_ongoing_requests": 4}

    @serve.deployment(name="vggt", ray_actor_options=actor_options, autoscaling_config=autoscaling,
                      max_ongoing_requests=64, health_check_period_s=10)
    @serve.ingress(app)
    class VGGTReplica:
        def __init__(self, settings: ServiceConfig) -> None:
            try:
                name = serve.get_replica_context().replica_tag
            except Exception:  # noqa: BLE001 - outside a replica context (unit use)
                name = f"replica{os.getpid()}"
            service = Service(settings, name=str(name)[-12:])
            service.start()
            _set_replica_service(service)

        def __del__(self) -> None:
            _stop_replica_service()

    return VGGTReplica.bind(replica_config)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    from ..errors import VGGTError
    from .server import add_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m vggt_blender.service.ray_app",
                                     description="Serve the reconstruction API with Ray Serve (one replica per GPU).")
    add_arguments(parser)
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=1.0, help="GPUs per replica (default 1; 0: CPU replicas)")
    parser.add_argument("--num-cpus", type=float, help="CPUs per replica (CPU replicas: tests, no GPU)")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except VGGTError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        # A Ray of its own on this machine talks over loopback only (Ray's node address is otherwise this
        # machine's network address); a cluster is joined with --address instead.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray import serve
    except ImportError:
        sys.stderr.write("error: Ray Serve is not installed: pip install -r requirements/ray.txt\n")
        return 1

    if address:
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False, num_gpus=None if args.num_gpus else 0,
                 object_store_memory=100 * 2**20, log_to_driver=False)
    port = args.port or _free_port(config.host)
    serve.start(http_options={"host": config.host, "port": port})
    serve.run(deployment(config, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                         num_gpus=args.num_gpus, num_cpus=args.num_cpus), name="vggt", route_prefix="/")
    shown = f"[{config.host}]" if ":" in config.host else config.host
    sys.stderr.write(f"serving on http://{shown}:{port} (Ray Serve, data in {config.data_dir})\n")
    sys.stderr.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())
    stop.wait()

    def shut_down() -> None:
        serve.shutdown()
        ray.shutdown()

    closer = threading.Thread(target=shut_down, daemon=True)
    closer.start()
    closer.join(60)  # a Ray that does not shut down in time is left to its own clean-up
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: Ray sends module functions to the replicas by
    # name, and the replica's Service must be set and read through one module.
    import importlib

    sys.exit(importlib.import_module(__spec__.name).main())

"""The service's settings (from `serve`'s flags or a Ray deployment's arguments) and the start-up checks."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RequestError

TOKEN_ENV = "VGGT_SERVER_TOKEN"
DEFAULT_PORT = 8765


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vggt_blender" / "service"


@dataclass
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    weights: str | None = None
    model: str = "vggt-1b"  # the worker's "config": a preset name or a config .json (the server's choice)
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one runner (and one loaded model) each
    max_upload_mb: float = 2048.0
    max_photos: int = 1000
    max_queue: int = 16
    data_dir: Path = field(default_factory=default_data_dir)
    keep_minutes: float = 24 * 60.0  # how long a finished job's files stay in the data folder
    python: str = sys.executable  # the Python that runs the worker (needs torch)
    warm_up: bool = True  # load the model at start (health says "loading" until it is in memory)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def auth_required(self) -> bool:
        return bool(self.token)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def read_token(token_file: str | None) -> str | None:
    """The token from `token_file` (first line, stripped) or $VGGT_SERVER_TOKEN; None when neither is set."""
    if token_file:
        try:
            text = Path(token_file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise RequestError(f"{token_file}: cannot read the token file: {exc.strerror or exc}",
                               file=token_file) from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise RequestError(f"{token_file}: the token file is empty", file=token_file)
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def check_config(config: ServiceConfig) -> None:
    """Refuse settings that would expose an open server or cannot work; RequestError names the problem."""
    if not config.token and not is_loopback(config.host):
        raise RequestError(f"refusing to listen on {config.host} without a token: anyone who can reach it could "
                           f"run jobs; give --token-file FILE or set {TOKEN_ENV} (or listen on 127.0.0.1)")
    if config.token is not None and len(config.token) < 16:
        raise RequestError("the token is shorter than 16 characters; use a long random one "
                           "(python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    for name in ("max_photos", "max_queue"):
        if getattr(config, name) < 1:
            raise RequestError(f"--{name.replace('_', '-')} must be at least 1")
    if not config.max_upload_mb > 0:
        raise RequestError("--max-upload-mb must be positive")
    if not config.devices:
        raise RequestError("give at least one --device")

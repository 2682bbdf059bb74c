"""`Service`: the job store plus one runner per device, as one process serving the API holds them."""

from __future__ import annotations

from .config import ServiceConfig
from .runner import ERROR, LOADING, READY, DeviceRunner
from .store import JobStore


class Service:
    def __init__(self, config: ServiceConfig, runners: bool = True, name: str = "") -> None:
        self.config = config
        self.store = JobStore(config.data_dir, keep_seconds=config.keep_minutes * 60.0)
        prefix = f"{name}-" if name else ""
        self.runners = [DeviceRunner(self.store, config, device, f"{prefix}{index}-{device}")
                        for index, device in enumerate(config.devices)] if runners else []

    def start(self) -> None:
        # Jobs a killed predecessor was running can never finish: fail them before taking new ones.
        self.store.recover_orphans({r.owner for r in self.runners})
        for runner in self.runners:
            runner.start()

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()

    def wake(self) -> None:
        for runner in self.runners:
            runner.wake.set()

    @property
    def state(self) -> str:
        """"ready" when a runner can take jobs, "loading" while none can yet, "error" when none ever will."""
        states = {r.state for r in self.runners}
        if READY in states or not self.runners:
            return READY
        return LOADING if LOADING in states else ERROR

    def first_error(self) -> dict | None:
        return next((r.error for r in self.runners if r.error), None)

    def health(self) -> dict:
        config = self.config
        error = self.first_error() if self.state == ERROR else None
        return {"status": self.state, "api": "v1", "model": config.model,
                "device": self.runners[0].device if self.runners else None,
                "devices": [{"name": r.name, "device": r.device, "state": r.state, "error": r.error,
                             "job": r.current} for r in self.runners],
                "queue_length": self.store.queue_length(), "auth": config.auth_required, "error": error,
                "limits": {"max_upload_mb": config.max_upload_mb, "max_photos": config.max_photos,
                           "max_queue": config.max_queue, "keep_minutes": config.keep_minutes}}

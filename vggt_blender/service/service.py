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

    def all_runners(self) -> list[dict]:
        """Every runner serving this data folder (other processes' too: Ray replicas), this process's own as
        they are this instant."""
        own = {r.owner: r.info() for r in self.runners}
        shared = [info for info in self.store.runners() if info.get("owner") not in own]
        return [*own.values(), *shared]

    @property
    def state(self) -> str:
        """"ready" when some runner can take jobs (the queue is shared: any free runner takes the next),
        "loading" while none can yet, "error" when none ever will."""
        states = {info.get("state") for info in self.all_runners()}
        if READY in states or not states:
            return READY
        return LOADING if LOADING in states else ERROR

    def first_error(self) -> dict | None:
        return next((info["error"] for info in self.all_runners() if info.get("error")), None)

    def health(self) -> dict:
        config = self.config
        runners = self.all_runners()
        error = self.first_error() if self.state == ERROR else None
        return {"status": self.state, "api": "v1", "model": config.model,
                "device": runners[0]["device"] if runners else None,
                "devices": [{key: info.get(key) for key in ("name", "device", "state", "error", "job")}
                            for info in runners],
                "queue_length": self.store.queue_length(), "auth": config.auth_required, "error": error,
                "limits": {"max_upload_mb": config.max_upload_mb, "max_photos": config.max_photos,
                           "max_queue": config.max_queue, "keep_minutes": config.keep_minutes}}

"""The reconstruction service: `python -m vggt_blender serve` (docs/SERVICE.md).

A FastAPI app (app.py) over a job store kept in the data folder (store.py), with one runner per device
(runner.py) feeding a long-lived worker subprocess (worker_session.py). Optional extra: requirements/service.txt;
the Blender extension never imports this package (its client is jobs/remote.py, stdlib only).
"""

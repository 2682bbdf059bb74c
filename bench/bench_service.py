"""Load test of the reconstruction service on loopback: C concurrent clients, each running J small jobs one after
another through `RemoteJob` (upload, queue, poll, download), against a real `serve` with the tiny random
checkpoint on the CPU. Bounded in count (C x J jobs) and time (--time-limit); it stops by itself.

    python bench/bench_service.py [--clients 20] [--jobs 5] [--photos 1] [--max-queue 8] [--time-limit 900]

Checks, and prints as tables: every job ends done with a valid file (its photo paths this machine's) or with a
clear error, none lost (C x J outcomes); the server's memory (server + worker RSS) and open files, sampled every
second, stay flat (first vs last quarter of the run); throughput (jobs/min), end-to-end latency per job
(p50/p95/max: upload, queue, inference, download) and the latency of status calls under load. The tiny model
makes inference cheap but not free: the run measures the service, its queue and its client, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from service_helpers import TOKEN, Server, call  # noqa: E402
from test_inference import write_photos, write_tiny_checkpoint  # noqa: E402
from vggt_blender.io.reconstruction import load_reconstruction  # noqa: E402
from vggt_blender.jobs.remote import RemoteJob  # noqa: E402


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per client, one after another")
    parser.add_argument("--photos", type=int, default=1, help="photos per job")
    parser.add_argument("--max-queue", type=int, default=8, help="the server's --max-queue (429s are retried)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds before the clients give up")
    parser.add_argument("--patience", type=float, default=300.0,
                        help="seconds a client keeps retrying a full queue (429) or a lost connection")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vggt-load-"))
    photos = [str(p) for p in write_photos(tmp / "photos", count=max(3, args.photos))]
    server = Server(tmp / "data", write_tiny_checkpoint(tmp), "--max-queue", str(args.max_queue),
                    "--max-photos", str(args.photos))
    outcomes: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.time_limit
    samples: list[tuple[float, int, int]] = []
    status_latency: list[float] = []
    stop = threading.Event()
    try:
        server.wait_ready()
        pid = server.process.pid

        def sample() -> None:
            while not stop.wait(1.0):
                rss = rss_kb(pid) + sum(rss_kb(c) for c in children(pid))
                samples.append((time.monotonic(), rss, open_files(pid)))
                start = time.perf_counter()
                call(server, "GET", "/v1/health", auth=False, timeout=30)
                status_latency.append(time.perf_counter() - start)

        def client(index: int) -> None:
            for number in range(args.jobs):
                output = tmp / "out" / f"c{index}" / f"job{number}.npz"
                output.parent.mkdir(parents=True, exist_ok=True)
                chosen = [photos[(index + number + k) % len(photos)] for k in range(args.photos)]
                job = RemoteJob(server.url, TOKEN, {"images": chosen, "output": str(output), "device": "cpu"},
                                poll_interval=0.5, reconnect_for=args.patience)
                start = time.monotonic()
                marks: dict[str, float] = {}
                job.start()
                while not job.finished and time.monotonic() < deadline:
                    for event in job.poll():
                        if event.get("type") == "progress":
                            marks.setdefault(event["stage"], time.monotonic() - start)
                    time.sleep(0.1)
                outcome = {"client": index, "job": number, "state": job.state, "seconds": time.monotonic() - start,
                           "marks": marks, "error": job.error_message}
                if job.state == "done":
                    try:
                        rec = load_reconstruction(output)
                        outcome["valid"] = rec.image_paths == [str(Path(p).resolve()) for p in chosen]
                    except Exception as exc:  # noqa: BLE001 - counted as an invalid file
                        outcome["valid"] = False
                        outcome["error"] = str(exc)
                elif not job.finished:
                    job.cancel()
                    outcome["state"] = "timed out"
                with lock:
                    outcomes.append(outcome)
                if time.monotonic() > deadline:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, deadline - time.monotonic() + 60))
        elapsed = time.monotonic() - began
        stop.set()
        sampler.join(5)
    finally:
        stop.set()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    expected = args.clients * args.jobs
    done = [o for o in outcomes if o["state"] == "done"]
    valid = [o for o in done if o.get("valid")]
    errors = [o for o in outcomes if o["state"] != "done"]
    seconds = [o["seconds"] for o in done]
    quarter = max(1, len(samples) // 4)
    first = samples[:quarter]
    last = samples[-quarter:]
    mem_first = statistics.mean(s[1] for s in first) / 1024 if first else float("nan")
    mem_last = statistics.mean(s[1] for s in last) / 1024 if last else float("nan")
    fds_first = max((s[2] for s in first), default=0)
    fds_last = max((s[2] for s in last), default=0)

    def submitted(o: dict) -> float | None:
        """When the server had the job: the first stage after the upload."""
        after = [o["marks"][k] for k in ("queued", "starting", "preprocessing", "loading", "inference")
                 if k in o["marks"]]
        return min(after) if after else None

    def running(o: dict) -> float | None:
        after = [o["marks"][k] for k in ("starting", "preprocessing", "loading", "inference") if k in o["marks"]]
        return min(after) if after else None

    upload = [submitted(o) - o["marks"]["uploading"] for o in done
              if "uploading" in o["marks"] and submitted(o) is not None]
    queue = [running(o) - submitted(o) for o in done if running(o) is not None and submitted(o) is not None]

    print(f"\n{args.clients} clients x {args.jobs} jobs x {args.photos} photo(s), max queue {args.max_queue}, "
          f"client patience {args.patience:g} s, tiny model on the CPU, loopback\n")
    print("| jobs | done, valid file | clear error | lost | wall (s) | throughput (jobs/min) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {expected} | {len(valid)} | {len(errors)} | {expected - len(outcomes)} | {elapsed:.0f} | "
          f"{60 * len(done) / elapsed:.1f} |")
    print("\n| latency (s) | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    rows = [("end to end (submit to file on disk)", seconds), ("upload", upload),
            ("queue (incl. 429 retries)", queue), ("health call under load", status_latency)]
    for name, values in rows:
        print(f"| {name} | {pct(values, 0.5):.2f} | {pct(values, 0.95):.2f} | {max(values, default=float('nan')):.2f} |")
    print("\n| server + worker memory (MB) | open files (server) |")
    print("|---|---|")
    print(f"| first quarter {mem_first:.0f}, last quarter {mem_last:.0f}, peak "
          f"{max((s[1] for s in samples), default=0) / 1024:.0f} | first quarter {fds_first}, last quarter "
          f"{fds_last} |")
    if errors:
        print("\nerrors:", *sorted({str(o["error"]) for o in errors})[:10], sep="\n  ")
    figures = {"clients": args.clients, "jobs": args.jobs, "photos": args.photos, "expected": expected,
               "done_valid": len(valid), "errors": len(errors), "lost": expected - len(outcomes),
               "wall_s": elapsed, "jobs_per_min": 60 * len(done) / elapsed, "latency_p50": pct(seconds, 0.5),
               "latency_p95": pct(seconds, 0.95), "status_p50": pct(status_latency, 0.5),
               "status_p95": pct(status_latency, 0.95), "mem_first_mb": mem_first, "mem_last_mb": mem_last,
               "fds_first": fds_first, "fds_last": fds_last}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    ok = len(valid) + len(errors) == expected and len(valid) == len(done) and mem_last < 1.5 * mem_first + 50
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

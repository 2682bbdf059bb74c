"""Schemathesis against the service's own OpenAPI document: malformed and random requests to every operation
of a real `serve` on 127.0.0.1 (tiny random checkpoint), bounded in examples and time.

    pip install -r requirements/bench.txt
    python bench/fuzz_service.py [--max-examples 40] [--max-time 180]

Prints schemathesis' summary; exits with its status (0: no check failed). Checks: no 5xx, status codes and
content types and bodies as the document declares, headers (Allow on 405), and the token: every operation but
health must refuse a request without it. The stateful phase follows the document's links (submit -> status,
events, result, cancel).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from service_helpers import TOKEN, Server  # noqa: E402
from test_inference import write_photos, write_tiny_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=40, help="examples per operation and phase")
    parser.add_argument("--max-time", type=int, default=180, help="seconds for the whole run")
    args = parser.parse_args()
    tool = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    tmp = Path(tempfile.mkdtemp(prefix="vggt-fuzz-"))
    server = Server(tmp / "data", write_tiny_checkpoint(tmp), "--max-queue", "2", "--max-photos", "4",
                    "--max-upload-mb", "2")
    try:
        server.wait_ready()
        # One real job, so that the job operations also meet an existing id (its result, its events).
        photo = write_photos(tmp / "photos", count=1)[0]
        from service_helpers import submit, wait_for

        status, accepted = submit(server, [(photo.name, photo.read_bytes())], {})
        assert status == 202, accepted
        wait_for(server, accepted["id"])
        command = [tool, "run", f"{server.url}/v1/openapi.json", "--header", f"Authorization: Bearer {TOKEN}",
                   # Left out: positive_data_acceptance (no schema can say "a photo that decodes" or "one client
                   # path per photo": a schema-valid upload of random bytes is rightly a 400/422) and
                   # use_after_free (DELETE cancels a job; its record stays readable, "cancelled", until the
                   # retention time removes it).
                   "--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free",
                   "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
                   "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1", "--max-response-time", "30",
                   "--suppress-health-check", "all", "--generation-database", "none", "--seed", "1"]
        print("$", " ".join(c if " " not in c else repr(c) for c in command), flush=True)
        return subprocess.run(command, cwd=tmp, timeout=args.max_time + 120).returncode
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

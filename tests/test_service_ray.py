"""The same API tests against the Ray Serve deployment: a local Ray (CPU only), two replicas of one CPU each
half, the tiny checkpoint. Skipped where Ray is not installed (requirements/ray.txt, an optional extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from tests.service_helpers import Server
from tests import test_service_api as api

# The API tests, collected here again: they run against this module's `setup` (the Ray deployment).
from tests.test_service_api import (  # noqa: F401
    test_a_whole_job_gives_the_local_engine_numbers_with_client_paths, test_bad_options_are_422_and_create_no_job,
    test_bad_photos_are_400_naming_the_file_as_sent, test_health_is_open_and_everything_else_needs_the_token,
    test_no_photos_is_422, test_remote_job_runs_like_a_local_one_and_fetches_upright_copies,
    test_two_clients_at_once_run_one_at_a_time_in_arrival_order, test_upload_limits_are_checked_while_the_body_arrives,
    test_uploaded_names_cannot_escape_or_collide)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    prepared = api.prepare(tmp_path_factory.mktemp("ray"), "--min-replicas", "2", "--max-replicas", "2",
                           "--num-gpus", "0", "--num-cpus", "0.5", command=("vggt_blender.service.ray_app",),
                           replicas=2)
    yield prepared
    prepared["server"].stop()

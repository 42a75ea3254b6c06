"""docker-compose.workers.yml (extra workers on other machines) matches the
project: read, not run (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.fixtures.settings_env import settings_env_vars
from tests.test_docker_compose import _check_command, celery_worker_queues

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_worker_compose_file_runs_workers_against_external_services():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.workers.yml").read_text())
    worker = compose["services"]["worker"]

    _check_command("worker", worker["command"])
    assert set(compose["services"]) == {"worker"}, "beat runs on the main machine only"
    from callcenter.celery import RECOGNITION_QUEUE

    assert celery_worker_queues(worker["command"]) == {RECOGNITION_QUEUE}, "adaptation runs on the main machine"
    env = worker["environment"]
    assert not set(env) - settings_env_vars()
    for name in ["DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY"]:
        assert env[name].startswith("${" + name + ":?"), f"{name} must be required, not defaulted"
    assert env["CALLCENTER_VAR_DIR"] == "/data" and worker["volumes"][0].endswith(":/data")
    assert worker["healthcheck"]["test"] and worker["restart"] == "unless-stopped"

"""docker-compose.yml matches the project: no Docker engine runs here, so the
file is checked by reading it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.fixtures.settings_env import settings_env_vars

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict:
    try:
        import yaml
    except ModuleNotFoundError:
        pytest.fail("PyYAML is not installed: requirements.txt must list PyYAML==6.0.3")
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _app_services(compose: dict) -> dict[str, dict]:
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def test_compose_runs_the_whole_stack(compose):
    assert {"postgres", "redis", "web", "worker", "adaptation-worker", "beat"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert (REPO_ROOT / compose["services"]["web"]["build"] / "Dockerfile").exists()


def test_every_long_running_service_has_a_health_check(compose):
    for name, spec in compose["services"].items():
        if spec.get("restart") != "no":
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_dependencies_and_volumes_are_declared(compose):
    services = set(compose["services"])
    declared_volumes = set(compose.get("volumes") or {})
    for name, spec in compose["services"].items():
        assert set(spec.get("depends_on") or {}) <= services, name
        for volume in spec.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"


def _check_command(service: str, command: list[str]) -> None:
    program, args = command[0], command[1:]
    if program == "daphne":
        assert (VENV_BIN / "daphne").exists(), "daphne is not installed"
        module_name, _, attribute = args[-1].partition(":")
        assert hasattr(importlib.import_module(module_name), attribute), f"{service}: {args[-1]} not found"
    elif program == "celery":
        assert (VENV_BIN / "celery").exists(), "celery is not installed"
        app_module = args[args.index("-A") + 1]
        from celery import Celery

        assert isinstance(importlib.import_module(app_module).celery_app, Celery), f"{service}: no Celery app"
        assert {"worker", "beat"} & set(args), f"{service}: unknown celery subcommand in {args}"
    elif program == "python" and args[0] == "manage.py":
        from django.core.management import get_commands

        assert (REPO_ROOT / "manage.py").exists()
        assert args[1] in get_commands(), f"{service}: no management command {args[1]}"
    else:
        pytest.fail(f"{service}: unexpected command {command}")


def test_every_project_service_command_exists_in_the_project(compose):
    services = _app_services(compose)
    assert {"web", "worker", "adaptation-worker", "beat"} <= set(services)
    for name, spec in services.items():
        _check_command(name, spec["command"])


def celery_worker_queues(command: list[str]) -> set[str] | None:
    """The queues a ``celery worker`` command consumes (None: not a worker;
    every queue of the app when it has no ``-Q``)."""
    from callcenter.celery import app

    if command[0] != "celery" or "worker" not in command:
        return None
    if "-Q" not in command:
        return set(app.amqp.queues)
    return set(command[command.index("-Q") + 1].split(","))


def test_live_calls_and_adaptation_have_workers_of_their_own(compose):
    from callcenter.celery import ADAPTATION_QUEUE, RECOGNITION_QUEUE, app

    services = _app_services(compose)
    queues = {name: celery_worker_queues(spec["command"]) for name, spec in services.items()}
    queues = {name: consumed for name, consumed in queues.items() if consumed is not None}

    assert queues == {"worker": {RECOGNITION_QUEUE}, "adaptation-worker": {ADAPTATION_QUEUE}}
    assert set().union(*queues.values()) == set(app.amqp.queues), "a queue nobody consumes"
    adaptation = services["adaptation-worker"]
    command = adaptation["command"]
    assert command[command.index("-c") + 1] == "1", "one adaptation at a time"
    assert adaptation["cpu_shares"] < 1024, "adaptation runs at a lower CPU weight than recognition"
    assert adaptation["image"] == services["worker"]["image"] and adaptation["volumes"] == services["worker"]["volumes"]
    assert set(adaptation["depends_on"]) == set(services["worker"]["depends_on"])


def test_every_environment_variable_set_for_the_app_is_read_by_the_settings(compose):
    read = settings_env_vars()
    for name, spec in _app_services(compose).items():
        unread = set(spec.get("environment") or {}) - read
        assert not unread, f"{name} sets variables the settings never read: {sorted(unread)}"


def test_the_app_services_get_database_redis_and_a_secret_key(compose):
    for name, spec in _app_services(compose).items():
        env = spec["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:6379/"), name
        assert env["DJANGO_DEBUG"] == "0" and "DJANGO_SECRET_KEY" in env, name

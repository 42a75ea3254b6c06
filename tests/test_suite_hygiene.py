"""The test suite itself leaves the project's folders alone."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def test_every_test_stores_media_and_models_outside_the_projects_var_folder():
    var = (Path(settings.BASE_DIR) / "var").resolve()
    for folder in (settings.MEDIA_ROOT, settings.MODEL_DIR):
        assert not Path(folder).resolve().is_relative_to(var), folder


def test_each_xdist_worker_has_a_redis_database_of_its_own():
    import os

    from tests.fixtures import xdist_redis

    url = xdist_redis.worker_redis_url
    assert url("redis://127.0.0.1:6379/15", "gw0") == "redis://127.0.0.1:6379/15"
    assert url("redis://127.0.0.1:6379/15", "gw1") == "redis://127.0.0.1:6379/14"
    assert url("redis://:pw@h:6379/1", "gw1") == "redis://:pw@h:6379/2"  # never database 0
    assert url("redis://h:6379", "gw2") == "redis://h:6379/2"
    assert url("unix:///run/redis.sock", "gw1") == "unix:///run/redis.sock"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and xdist_redis.BASE_REDIS_URL:  # this run's own worker: the settings read its database
        assert settings.REDIS_URL == url(xdist_redis.BASE_REDIS_URL, worker)

"""Test-wide fixtures. The backend's tests run against the real PostgreSQL
and Redis that `make test` points DATABASE_URL and REDIS_URL at."""

from __future__ import annotations

import pytest

from tests.fixtures.daphne import web_server  # noqa: F401
from tests.fixtures.worker import celery_worker, shared_var_dir  # noqa: F401


def pytest_configure(config):
    """Several test processes (pytest-xdist's ``-n``) need a Redis database each, which
    ``tests/fixtures/xdist_redis.py`` gives them: refused without it, before any worker starts."""
    import sys

    if getattr(config.option, "numprocesses", None) and "tests.fixtures.xdist_redis" not in sys.modules:
        raise pytest.UsageError(
            "pytest-xdist workers need a Redis database each: run `make test`, or add "
            "`-p tests.fixtures.xdist_redis` to `python -m pytest -n N`"
        )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):  # noqa: F811 - wraps pytest-django's fixture
    """pytest-django's test database, refused unless it is PostgreSQL."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.exit(
            "the backend tests need the real PostgreSQL and Redis: run `make test`, "
            "or set DATABASE_URL=postgres://... and REDIS_URL=redis://.../15",
            returncode=2,
        )
    return django_db_setup


@pytest.fixture(scope="session")
def real_dev(tmp_path_factory):
    """The real-speech development set (``../shared/real-speech/``): a real speaker's telephone
    prompts, 30 ``adapt`` and 67 ``test``, as a manifest. Only these prompts, never the package's
    others."""
    import subprocess
    import sys
    from pathlib import Path

    from asr_core.manifest import read_manifest

    script = Path(__file__).resolve().parent.parent.parent / "shared" / "real-speech" / "make_dev_manifest.py"
    if not script.is_file():
        pytest.fail(f"the real-speech development set is missing: {script}")
    out = tmp_path_factory.mktemp("real-dev")
    done = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"make_dev_manifest.py: {done.stderr.strip() or done.stdout.strip()} (make test installs them)")
    manifest = out / "manifest.tsv"
    assert len(read_manifest(str(manifest), ("test",))) == 67
    return manifest


@pytest.fixture(scope="session", autouse=True)
def media_in_a_temporary_folder(shared_var_dir):  # noqa: F811 - the fixture imported above
    """Every test stores audio and model files under a temporary folder,
    never in the project's ``var/``."""
    return shared_var_dir


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A new channel-layer object per test: channels_redis binds its receive
    lock to the event loop that first used it, and each ``async_to_sync``
    in a test runs its own loop (the Redis server and its data are real and
    shared)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


FLUSH_ATTEMPTS = 5


@pytest.fixture(scope="session", autouse=True)
def flush_outlasts_the_workers_writes():
    """A transactional test ends with ``flush`` (one TRUNCATE of every table).
    The session's worker may still be writing for an earlier test (a call's
    analytics, an adaptation): PostgreSQL can then pick the TRUNCATE as a
    deadlock victim, and the next tests would start on the last test's rows.
    The flush is tried again (the worker's write commits or fails in the
    meantime: its tasks treat a vanished call as gone)."""
    import time

    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown_with_retries(self):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return original(self)
            except CommandError as exc:
                if attempt == FLUSH_ATTEMPTS or "couldn't be flushed" not in str(exc):
                    raise
                time.sleep(0.5 * attempt)

    TransactionTestCase._fixture_teardown = teardown_with_retries
    yield
    TransactionTestCase._fixture_teardown = original

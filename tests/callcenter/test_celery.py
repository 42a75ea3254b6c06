"""Queues by domain (callcenter/celery.py): live-call recognition never waits
behind caller adaptation. Real workers on a redis-server of this module's own
(the session's worker consumes both queues of the shared Redis), tasks queued
with ``celery call`` as any other process queues them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings as django_settings

from asr_core.corpus.sentences import sentences
from asr_core.corpus.speakers import make_speaker
from asr_core.corpus.synth import render
from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, Segment
from callcenter.celery import (
    ADAPTATION_QUEUE,
    RECOGNITION_QUEUE,
    RECOGNITION_RETRY_COUNTDOWN_MAX_S,
    app,
    visibility_timeout_s,
)
from tests.fixtures.services import app_env, redis_service, wait_redis
from tests.fixtures.worker import REPO_ROOT, worker_running

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 120
SEGMENTS = 6


@pytest.fixture
def private_redis(tmp_path) -> Iterator[str]:
    service, url = redis_service(tmp_path)
    service.start()
    try:
        wait_redis(url)
        yield url
    finally:
        service.stop()


def _queue(env: dict[str, str], task: str, **kwargs: object) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "callcenter", "call", task, "--kwargs", json.dumps(kwargs)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _waiting(url: str, queue: str) -> list[str]:
    """Names of the tasks waiting in ``queue`` (kombu's Redis list)."""
    return [json.loads(message)["headers"]["task"] for message in redis.Redis.from_url(url).lrange(queue, 0, -1)]


def _until(what: str, done, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.3)


def _caller_with_audio() -> tuple[int, list[Segment]]:
    rng = random.Random(11)
    speaker = make_speaker(rng, "t0", "test")
    while speaker.engine != "espeak":
        speaker = make_speaker(rng, "t0", "test")
    customer = services.customer_create(phone="+15557790001")
    call = services.call_start(protocol="twilio", external_id="MZ15557790001", customer_id=customer.pk)
    stored = []
    for index, text in enumerate(sentences(random.Random(5), SEGMENTS)):
        wav = asr.wav_bytes(render(speaker, text, 50 + index), 8000)
        stored.append(services.segment_create(
            call_id=call.pk, index=index, start_ms=index * 4000, end_ms=index * 4000 + 3000, sample_rate=8000,
            audio=wav,
        ))  # fmt: skip
    return customer.pk, stored


def test_tasks_are_routed_by_domain():
    route = {name: app.amqp.router.route({}, name)["queue"].name for name in (
        "recognition.segment", "system.ping", "maintenance.sweep", "adaptation.customer", "training.meta_train",
    )}  # fmt: skip

    assert route == {
        "recognition.segment": RECOGNITION_QUEUE, "system.ping": RECOGNITION_QUEUE,
        "maintenance.sweep": RECOGNITION_QUEUE, "adaptation.customer": ADAPTATION_QUEUE,
        "training.meta_train": ADAPTATION_QUEUE,
    }  # fmt: skip


def test_only_the_short_idempotent_recognition_task_is_redelivered_when_its_worker_dies():
    app.loader.import_default_modules()  # registers every task, as a worker does
    tasks = {name: app.tasks[name] for name in (
        "recognition.segment", "system.ping", "maintenance.sweep", "adaptation.customer", "training.meta_train",
    )}  # fmt: skip
    redelivered = {name for name, task in tasks.items() if task.acks_late and task.reject_on_worker_lost}
    visibility = app.conf.broker_transport_options["visibility_timeout"]

    assert redelivered == {"recognition.segment"}
    assert not tasks["training.meta_train"].acks_late and not tasks["adaptation.customer"].acks_late
    assert visibility == visibility_timeout_s(django_settings.RECOGNITION_TIME_LIMIT_S) == 60
    # A late-acked task still running past the visibility timeout would be handed to a second worker.
    for name, task in app.tasks.items():
        if task.acks_late:
            assert task.time_limit + RECOGNITION_RETRY_COUNTDOWN_MAX_S < visibility, (name, task.time_limit)
    assert tasks["adaptation.customer"].time_limit > visibility, "why adaptation must not be late-acked"
    assert app.conf.worker_disable_prefetch and app.conf.worker_prefetch_multiplier == 1


def test_the_broker_connection_uses_the_visibility_timeout_and_looks_for_lost_messages_often():
    with app.connection_for_read() as connection:
        options = connection.transport_options

    assert options["visibility_timeout"] == app.conf.broker_transport_options["visibility_timeout"]
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 5


def test_a_recognition_worker_recognizes_while_adaptation_waits_for_the_adaptation_worker(
    private_redis, shared_var_dir, tmp_path
):
    env = app_env(shared_var_dir, private_redis)
    customer_id, segments = _caller_with_audio()
    run = AdaptationRun.objects.create(customer_id=customer_id, trigger=AdaptationRun.Trigger.MANUAL)

    with worker_running(
        nodename=f"recognition-{tmp_path.name}@pytest", queues=[RECOGNITION_QUEUE], env=env,
        log_path=tmp_path / "recognition.log", other_broker=True,
    ) as recognition:  # fmt: skip
        _queue(env, "adaptation.customer", run_id=run.pk)  # queued first: a shared queue would run it first
        _queue(env, "recognition.segment", segment_id=segments[0].pk)
        _until("the segment's recognition", lambda: Segment.objects.get(pk=segments[0].pk).status != "pending")

        assert Segment.objects.get(pk=segments[0].pk).status == "recognized", recognition.log()
        assert _waiting(private_redis, ADAPTATION_QUEUE) == ["adaptation.customer"]
        assert AdaptationRun.objects.get(pk=run.pk).status == "queued"
        assert "Task adaptation.customer[" not in recognition.log()

    with worker_running(
        nodename=f"adaptation-{tmp_path.name}@pytest", queues=[ADAPTATION_QUEUE], env=env,
        log_path=tmp_path / "adaptation.log", other_broker=True,
    ) as adaptation:  # fmt: skip
        _until("the adaptation run", lambda: AdaptationRun.objects.get(pk=run.pk).status not in ("queued", "running"))

        finished = AdaptationRun.objects.get(pk=run.pk)
        assert finished.status in ("accepted", "rejected"), (finished.status, finished.reason, adaptation.log())
        assert _waiting(private_redis, ADAPTATION_QUEUE) == []

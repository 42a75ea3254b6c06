"""Faults with real processes: a worker killed mid-recognition, Redis
restarted mid-call, PostgreSQL connections dropped, the web process killed
mid-call. Each test runs its own redis-server (own port, empty after a
restart), Daphne and Celery worker (with beat: the sweeper every second)
against pytest-django's test database, injects the fault, and checks what a
user would see: every segment received is stored and recognized once, every
call is closed.

Run them alone with ``pytest -m faults``.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis
from asgiref.sync import async_to_sync
from django.db import OperationalError, connection, connections, transaction

from asr_core.metrics import wer
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from callcenter.tools.client import stream_twilio
from callcenter.tools.demo import synthetic_call
from tests.fixtures.services import (
    REPO_ROOT,
    app_env,
    daphne_service,
    redis_service,
    wait_http,
    wait_redis,
    worker_service,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

FAULT_ENV = {
    "SEGMENT_SWEEP_INTERVAL_S": 1,  # the sweeper every second ...
    "SEGMENT_STUCK_AFTER_S": 3,  # ... queues segments pending for 3 s again
    "STREAM_HEARTBEAT_S": 1,  # a killed web process's calls are orphaned after 3 s
    "STREAM_PARTIAL_INTERVAL_MS": 0,  # partials play no part in these faults
}
MAX_WER = 0.3


@pytest.fixture(scope="module")
def call_audio():
    return synthetic_call(seed=23, sentences=3)


@pytest.fixture
def stack(tmp_path, shared_var_dir):
    """Private Redis + web + worker (with beat); stopped at the end."""
    started = []

    class Stack:
        def __init__(self) -> None:
            self.redis, self.redis_url = redis_service(tmp_path)
            self.env = app_env(shared_var_dir, self.redis_url, **FAULT_ENV)
            self.web, self.port = daphne_service(self.env, tmp_path)
            self.worker = worker_service(self.env, tmp_path, "faults", beat=True)
            self.tmp = tmp_path

        def start(self, *services):
            for service in services:
                service.start()
                started.append(service)
                if service is self.redis:
                    wait_redis(self.redis_url)
                elif service.name.startswith("web"):
                    wait_http(f"http://127.0.0.1:{self.port}/healthz", service)
                else:
                    service.wait_for("ready.")

        def broker(self) -> redis.Redis:
            return redis.Redis.from_url(self.redis_url, socket_timeout=2)

        @property
        def ws_url(self) -> str:
            return f"ws://127.0.0.1:{self.port}"

    stack = Stack()
    try:
        yield stack
    finally:
        for service in reversed(started):
            service.stop()


@pytest.fixture
def token() -> str:
    return services.line_create(name="faults")[1]


def wait_until(what: str, predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def in_thread(function):
    """A fault injector run beside the call: it closes its own database
    connection when done (the test database is dropped at the end)."""

    def run() -> None:
        try:
            function()
        finally:
            connections.close_all()

    return run


def all_recognized(call_ids) -> bool:
    segments = Segment.objects.filter(call_id__in=list(call_ids))
    return segments.exists() and not segments.filter(status="pending").exists()


def assert_no_half_written_rows(call_ids) -> None:
    for segment in Segment.objects.filter(call_id__in=list(call_ids)):
        if segment.audio:
            assert Path(segment.audio.path).exists(), f"segment #{segment.pk} names a missing file"
            assert segment.status == "recognized" and segment.words, (segment.pk, segment.status, segment.failure_reason)
            assert segment.end_ms > segment.start_ms
        else:  # opened at speech onset, its audio never reached storage
            assert segment.status == "failed" and segment.failure_reason, (segment.pk, segment.status)
    for call in Call.objects.filter(pk__in=list(call_ids)):
        assert call.status in ("ended", "failed") and call.ended_at is not None, (call.pk, call.status)


def _segments_of(messages: list[dict]) -> set[int]:
    """The segments of kombu messages of ``recognition.segment`` tasks (the recognition queue also
    carries the analytics tasks)."""
    return {
        json.loads(base64.b64decode(m["body"]))[1]["segment_id"]
        for m in messages
        if m.get("headers", {}).get("task") == "recognition.segment"
    }


def _unacked_segments(broker: redis.Redis) -> set[int]:
    """Segments whose task a worker holds, delivered but not acknowledged
    (kombu's Redis ``unacked`` hash: message, exchange, routing key)."""
    return _segments_of([json.loads(raw)[0] for raw in broker.hvals("unacked")])


def _queued_segments(broker: redis.Redis) -> set[int]:
    return _segments_of([json.loads(raw) for raw in broker.lrange("recognition", 0, -1)])


def test_a_worker_killed_mid_recognition_loses_no_segment_and_stores_each_result_once(stack, token, call_audio):
    """SIGKILL to the whole worker (pool child included) while it holds a
    delivered, unacknowledged task: late acks keep it in the broker, which
    hands it to the restarted worker after the visibility timeout, well
    before the sweeper would (turned off here: only redelivery can bring
    it back); the store is idempotent."""
    # No sweeper, no beat, no batching (a later task would recognize the held segment in its batch);
    # a 15 s recognition limit makes the visibility timeout 45 s.
    env = {**stack.env, "SEGMENT_SWEEP_INTERVAL_S": "0", "RECOGNITION_TIME_LIMIT_S": "15", "RECOGNITION_BATCH_MAX": "1"}
    stack.worker = worker_service(env, stack.tmp, "faults", beat=False)
    stack.start(stack.redis, stack.web)
    run = async_to_sync(stream_twilio)(
        f"{stack.ws_url}/ws/media/twilio/{token}", call_audio.audio, realtime=False, caller="+15550109001"
    )
    assert run.close_code == 1000
    call = wait_until("the call stored", lambda: Call.objects.filter(status="ended").first())
    assert Segment.objects.filter(call=call).exclude(audio="").count() == len(call_audio.sentences)
    # Every task waits in the queue; now a worker starts taking them ...
    stack.start(stack.worker)
    broker = stack.broker()
    pending = Segment.objects.filter(call=call, status="pending")
    held = wait_until("a task delivered whose segment is not recognized yet",
                      lambda: _unacked_segments(broker) & set(pending.values_list("pk", flat=True)),
                      interval=0.01)  # fmt: skip
    stack.worker.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    # ... and dies holding it: its one copy is the broker's unacknowledged message.
    lost = next(iter(held))
    assert Segment.objects.get(pk=lost).status == "pending"
    assert lost in _unacked_segments(broker) and lost not in _queued_segments(broker)

    restarted = worker_service(env, stack.tmp, "faults-2", beat=False)
    stack.start(restarted)
    # Redelivered 45 s after its delivery; the sweeper (on by default) would
    # queue it again only SEGMENT_STUCK_AFTER_S (120 s) + up to an interval after.
    wait_until("every segment recognized", lambda: all_recognized([call.pk]), timeout=90)
    print(f"recognized {time.monotonic() - killed_at:.0f} s after the kill")
    # No recognition task is still held (analytics tasks waiting for their countdown sit in the
    # same hash until they are due): the redelivered task's acknowledgement follows its stored
    # result by a few milliseconds, so it gets a moment.
    wait_until("no recognition task held", lambda: not _unacked_segments(broker), timeout=10, interval=0.1)

    segments = list(Segment.objects.filter(call=call).order_by("index"))
    assert all(s.status == "recognized" and s.words for s in segments)
    assert wer(list(zip(call_audio.sentences, [s.text for s in segments], strict=True))) <= MAX_WER
    # Exactly once: a duplicate of a task (the broker may still redeliver the
    # killed worker's copy) stores nothing new.
    before = {s.pk: s.updated for s in segments}
    duplicate = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "callcenter", "call", "recognition.segment",
         "--kwargs", json.dumps({"segment_id": segments[0].pk})],
        cwd=REPO_ROOT, env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert duplicate.returncode == 0, duplicate.stderr
    task_id = duplicate.stdout.strip()
    wait_until("the duplicate task to run", lambda: f"Task recognition.segment[{task_id}] succeeded" in restarted.log())
    assert {s.pk: s.updated for s in Segment.objects.filter(call=call)} == before
    assert "'status': 'recognized'" in restarted.log().split(task_id)[-1].splitlines()[0]


def test_redis_restarted_mid_call_the_call_goes_on_and_every_segment_is_recognized(stack, token, call_audio):
    """Redis dies (and comes back empty) with a recognition task in its
    queue, and a segment ends while it is down: the call goes on, both
    segments are stored, and once Redis is back the sweeper queues them
    again or a later segment's task recognizes them in its batch."""
    stack.start(stack.redis, stack.web)  # the worker is busy elsewhere: tasks wait in Redis

    def outage() -> None:
        stored = Segment.objects.exclude(audio="")
        wait_until("the first segment stored", lambda: stored.exists(), interval=0.05)
        time.sleep(0.3)  # its task is in Redis's queue
        stack.redis.kill(signal.SIGKILL)  # nothing persisted: the queue is lost
        wait_until("a segment stored while Redis is down", lambda: stored.count() >= 2, timeout=20, interval=0.05)
        time.sleep(1)
        stack.redis.start()
        wait_redis(stack.redis_url)
        stack.start(stack.worker)

    fault = threading.Thread(target=in_thread(outage))
    fault.start()
    run = async_to_sync(stream_twilio)(
        f"{stack.ws_url}/ws/media/twilio/{token}", call_audio.audio, realtime=True, caller="+15550109002"
    )
    fault.join()

    assert run.close_code == 1000, "the media socket does not need Redis: the call goes on"
    call = wait_until("the call closed", lambda: Call.objects.exclude(status="live").first())
    assert call.status == "ended", call.failure_reason
    wait_until("every segment recognized", lambda: all_recognized([call.pk]), timeout=90)
    segments = list(Segment.objects.filter(call=call).order_by("index"))
    assert len(segments) == len(call_audio.sentences)
    assert wer(list(zip(call_audio.sentences, [s.text for s in segments], strict=True))) <= MAX_WER
    assert_no_half_written_rows([call.pk])
    assert "recognition not queued" in stack.web.log(), "a segment ended while Redis was down"
    log = stack.worker.log()
    assert re.search(r"sweeper: .* queued [1-9]", log) or re.search(r"recognized in the batch of segment #\d+", log), (
        "the lost task was queued again, or its segment recognized in another task's batch"
    )


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate_backends(*, keep: int) -> int:
    """Drop the web and worker processes' connections to the test database
    (as a DBA or a failover would); the server itself keeps running."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
            [keep],
        )
        return cursor.fetchone()[0]


def test_postgres_connections_dropped_mid_call_leave_no_half_written_rows(stack, token, call_audio):
    stack.start(stack.redis, stack.web, stack.worker)
    dropped = []
    test_connection = _backend_pid()

    def faults() -> None:
        for _ in range(3):
            time.sleep(2.5)
            dropped.append(_terminate_backends(keep=test_connection))

    fault = threading.Thread(target=in_thread(faults))
    fault.start()
    run = async_to_sync(stream_twilio)(
        f"{stack.ws_url}/ws/media/twilio/{token}", call_audio.audio, realtime=True, caller="+15550109003"
    )
    fault.join()

    assert sum(dropped) >= 3, dropped  # the web and worker connections were there to drop
    call = Call.objects.get()
    wait_until("the call closed", lambda: Call.objects.filter(pk=call.pk).exclude(status="live").exists())
    call.refresh_from_db()
    # Either the processes reconnected and the call went on, or it failed cleanly with a reason.
    assert run.close_code == 1000 or (call.status == "failed" and call.failure_reason), (run.close_code, call)
    wait_until("every segment recognized or failed", lambda: all_recognized([call.pk]), timeout=90)
    assert_no_half_written_rows([call.pk])
    if call.status == "ended":
        segments = list(Segment.objects.filter(call=call).order_by("index"))
        assert wer(list(zip(call_audio.sentences, [s.text for s in segments], strict=True))) <= MAX_WER


def test_a_connection_dropped_inside_a_write_raises_a_clear_error_and_writes_nothing():
    call = services.call_start(protocol="pcm")
    segment = services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=500, sample_rate=8000)
    own_pid = connection.cursor().connection.info.backend_pid
    settings_dict = connection.settings_dict
    dba = psycopg.connect(
        host=settings_dict["HOST"], port=settings_dict["PORT"] or 5432, user=settings_dict["USER"],
        password=settings_dict["PASSWORD"], dbname=settings_dict["NAME"], autocommit=True,
    )  # fmt: skip

    with pytest.raises(OperationalError):
        with transaction.atomic():
            services.segment_mark_failed(segment_id=segment.pk, reason="half of a write")
            dba.execute("SELECT pg_terminate_backend(%s)", [own_pid])
            services.segment_store_result(segment_id=segment.pk, text="never stored", words=[], confidence=0.5)
    dba.close()
    connection.close()  # Django reconnects on the next query

    segment.refresh_from_db()
    assert (segment.status, segment.text, segment.failure_reason) == ("pending", "", "")


def test_the_web_process_killed_mid_call_the_client_reconnects_and_the_old_call_is_closed(stack, token, call_audio):
    stack.start(stack.redis, stack.web, stack.worker)
    marks = []

    async def client():
        return await stream_twilio(
            f"{stack.ws_url}/ws/media/twilio/{token}", call_audio.audio, realtime=True, caller="+15550109004",
            marks=True, reconnect_s=90, on_message=lambda m: marks.append(m) if m.get("event") == "mark" else None,
        )  # fmt: skip

    def crash() -> None:
        wait_until("the first segment confirmed", lambda: marks, interval=0.05)
        time.sleep(1.0)  # into the next sentence: its audio is only in the web process's memory
        stack.web.kill(signal.SIGKILL)
        restarted, _ = daphne_service(stack.env, stack.tmp, port=stack.port, name="web-2")
        stack.start(restarted)

    fault = threading.Thread(target=in_thread(crash))
    fault.start()
    run = async_to_sync(client)()
    fault.join()

    assert run.reconnects == 1 and run.close_code == 1000 and len(run.stream_sids) == 2
    old, new = (Call.objects.get(external_id=sid) for sid in run.stream_sids)
    wait_until("the old call closed by the sweeper", lambda: Call.objects.filter(pk=old.pk, status="failed").exists())
    wait_until("the new call ended", lambda: Call.objects.filter(pk=new.pk, status="ended").exists())
    old.refresh_from_db()
    new.refresh_from_db()
    assert "web process stopped" in old.failure_reason and new.status == "ended"
    wait_until("every segment recognized", lambda: all_recognized([old.pk, new.pk]))
    assert_no_half_written_rows([old.pk, new.pk])
    # Nothing lost: the new stream resumed at the last audio the old server confirmed stored.
    stored = [s.text for c in (old, new) for s in Segment.objects.filter(call=c).exclude(audio="").order_by("index")]
    assert len(stored) == len(call_audio.sentences)
    assert wer([(" ".join(call_audio.sentences), " ".join(stored))]) <= MAX_WER, stored
    assert old.segments.filter(status="failed", audio="").count() <= 1  # the sentence in progress at the crash


def test_fault_tests_never_touch_the_shared_redis(stack):
    assert not stack.redis_url.endswith(":6379/0") and ":6379" not in stack.redis_url



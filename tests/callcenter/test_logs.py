"""Logs: the call on every line, JSON when asked, and no secret anywhere,
down to the real web server's and worker's output."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
import websockets
from asgiref.sync import async_to_sync

from callcenter import logs
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from callcenter.tools.client import stream_twilio
from callcenter.tools.demo import synthetic_call


def _logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    from django.conf import settings

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    formatter = settings.LOGGING["formatters"][fmt]
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logging.Formatter(formatter["format"]))
    logger = logging.getLogger(f"test-logs-{fmt}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger, stream


def test_plain_lines_carry_the_call_and_redact_secrets():
    logger, stream = _logger("plain")
    logs.bind(call=42, segment=7)
    try:
        logger.info("opened ws://h/ws/media/twilio/%s for %s", "tok-SECRET_1", "+15550100001")
        logger.info('login {"username": "ann", "password": "hunter2"} token=abc123')
    finally:
        logs.bind()
    logger.warning("no call here")

    lines = stream.getvalue().splitlines()
    assert "call=42 segment=7" in lines[0] and "ws/media/twilio/<redacted>" in lines[0]
    assert '"password": "<redacted>"' in lines[1] and "token=<redacted>" in lines[1]
    assert "call=- segment=-" in lines[2]
    assert "tok-SECRET_1" not in stream.getvalue() and "hunter2" not in stream.getvalue()


def test_outside_text_cannot_forge_a_log_line():
    logger, stream = _logger("plain")
    forged = "+1555\n2026-12-02 10:00:00,000 CRITICAL callcenter [pid=1 call=- segment=-] forged\r\x00\u2028x"
    logger.info("call #%s opened (pcm, caller %s)", 5, forged)
    try:
        raise ValueError(f"bad caller {forged}")
    except ValueError:
        logger.exception("failed for %s", forged)

    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("(pcm, caller +1555\\n2026-12-02 10:00:00,000 CRITICAL callcenter "
                             "[pid=1 call=- segment=-] forged\\r\\x00\\u2028x)")  # fmt: skip
    # No line starts with the forged time stamp: every line is one of the two
    # records, the traceback's first line, or an indented traceback line.
    assert not [line for line in lines if line.startswith("2026-12-02 10:00:00")]
    assert len([line for line in lines if not line.startswith(" ")]) == 3
    assert "Traceback" in lines[2] and "  ValueError: bad caller +1555" in lines


def test_json_lines_are_one_object_each_with_the_call():
    logger, stream = _logger("json")
    logs.bind(call=9)
    try:
        try:
            raise ValueError("bad ws/media/pcm/SECRET-TOKEN")
        except ValueError:
            logger.exception("failed")
    finally:
        logs.bind()

    entry = json.loads(stream.getvalue())
    assert entry["call"] == 9 and entry["level"] == "ERROR" and entry["message"] == "failed"
    assert "ValueError" in entry["exception"] and "SECRET-TOKEN" not in entry["exception"]


@pytest.mark.django_db(transaction=True)
def test_no_line_token_or_password_reaches_the_real_processes_logs(web_server, celery_worker, django_user_model):
    token = services.line_create(name="logs-secret")[1]
    password = "Zq8-very-secret-passw0rd"
    django_user_model.objects.create_user("log-agent", password=password, is_staff=True)
    audio = synthetic_call(seed=5, sentences=1).audio

    async def calls() -> None:
        run = await stream_twilio(f"{web_server.ws_url}/ws/media/twilio/{token}", audio, realtime=False)
        assert run.close_code == 1000
        async with websockets.connect(f"{web_server.ws_url}/ws/media/pcm/{token}x") as ws:  # a wrong token
            await ws.recv()

    async_to_sync(calls)()
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{web_server.http_url}/admin/login/", timeout=10).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"username": "log-agent", "password": password, "csrfmiddlewaretoken": csrf})
    opener.open(urllib.request.Request(f"{web_server.http_url}/admin/login/", data=form.encode(),
                                       headers={"Referer": f"{web_server.http_url}/admin/login/"}), timeout=10)  # fmt: skip
    deadline = time.monotonic() + 30
    while Segment.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    call = Call.objects.get(line__name="logs-secret")

    for output in (web_server.log(), celery_worker.log()):
        assert token not in output and password not in output
    web = web_server.log()
    assert "ws/media/twilio/<redacted>" in web
    call_lines = [line for line in web.splitlines() if f"call #{call.pk} " in line]
    assert call_lines and all(f"call={call.pk} " in line for line in call_lines), call_lines
    segment_ids = set(Segment.objects.filter(call=call).values_list("pk", flat=True))
    task_lines = [line for line in celery_worker.log().splitlines()
                  if "Task recognition.segment[" in line and "succeeded" in line
                  and int(re.search(r"'segment': (\d+)", line).group(1)) in segment_ids]  # fmt: skip
    assert task_lines and all(f"call={call.pk} segment=" in line for line in task_lines), task_lines

"""Structured logs: every line carries the call it concerns, and no secret.

- ``bind(call=..., segment=...)`` sets the call (and segment) of the code
  running now, in a context variable: a media consumer binds its call when
  the call opens, a recognition task binds its segment's call. Everything
  logged from there on, in that task or in the threads
  ``database_sync_to_async`` runs it on, carries ``call=<id>``; lines that
  concern no call carry ``call=-``.
- ``ContextFilter`` (on the handler) adds ``call``, ``segment`` and the
  process id to each record, and redacts secrets: the line token of a media
  URL (``/ws/media/twilio/<token>``), and ``password``/``token``/``secret``
  values in ``key=value`` or JSON form.
- Every record is one line: control characters in a message (a newline in
  a caller's number, say) are escaped (``\\n``), and the lines of a
  traceback are indented, so nothing from outside can forge a log line.
- ``DJANGO_LOG_FORMAT=json`` writes one JSON object per line
  (``JsonFormatter``), for log shippers; the default is one plain line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

_call: contextvars.ContextVar[int | None] = contextvars.ContextVar("log_call", default=None)
_segment: contextvars.ContextVar[int | None] = contextvars.ContextVar("log_segment", default=None)

_SECRETS = [
    # The last path segment of a media URL is the line token.
    (re.compile(r"(ws/media/(?:twilio|pcm)/)[^/\s'\"?#]+"), r"\1<redacted>"),
    # password=..., "password": "...", token: ..., secret ...
    (
        re.compile(r"""(?i)((?:password|passwd|token|secret|api[_-]?key)["']?\s*[:=]\s*["']?)[^\s"'&,;}]+"""),
        r"\1<redacted>",
    ),
]


# C0 controls but tab, DEL and C1 controls, and line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char) or char.encode("unicode_escape").decode("ascii")


def one_line(text: str) -> str:
    """``text`` with its control characters escaped: one log line."""
    return _CONTROL.sub(_escape, text)


def bind(*, call: int | None = None, segment: int | None = None) -> None:
    """Tag what this task logs from now on with the call (and segment)."""
    _call.set(call)
    _segment.set(segment)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        call = getattr(record, "call", None) or _call.get()
        segment = getattr(record, "segment", None) or _segment.get()
        record.call = "-" if call is None else call
        record.segment = "-" if segment is None else segment
        message = record.getMessage()
        clean = one_line(redact(message))
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # An exception's message can carry outside text: every line of
            # the traceback after its first is indented.
            lines = redact(record.exc_text).splitlines()
            record.exc_text = "\n".join(lines[:1] + ["  " + one_line(line) for line in lines[1:]])
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "call": getattr(record, "call", "-"),
            "segment": getattr(record, "segment", "-"),
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def redact_access_log() -> None:
    """Daphne's access log (stdout by default) prints each request's path,
    and a media URL's path ends in the line token: redact those lines too.
    Called once by ``callcenter.asgi`` in the web process."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # pragma: no cover - another ASGI server
        return
    original = AccessLogGenerator.write_entry
    if getattr(original, "redacting", False):
        return

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    write_entry.redacting = True
    AccessLogGenerator.write_entry = write_entry

"""The agent page and the JSON it reads. Thin: parse, call one selector or
service, answer. ``CallCenterError`` becomes a JSON error in ``api`` only."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from callcenter.errors import CallCenterError, Conflict, Forbidden, InvalidInput, InvalidState, NotFound

from callcenter.analytics import selectors as analytics_selectors

from . import payloads, selectors, services
from .access import Viewer, viewer_for_user

logger = logging.getLogger(__name__)

# Words recognized with less confidence than this are marked on the page.
LOW_CONFIDENCE = 0.6

_HTTP_STATUS: list[tuple[type[CallCenterError], int]] = [
    (InvalidInput, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidState, 409),
]


def _parse_id(raw: str, what: str) -> int:
    """A database id from the address: digits only, and small enough for the database."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidInput(f"{what} must be an id (a non-negative integer), got {raw[:40]!r}", **{what: raw[:40]})
    return int(raw)


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def api(*methods: str) -> Callable:
    """A JSON endpoint of the page: a logged-in agent or supervisor (401/403
    otherwise), one of ``methods`` (405), errors as ``{"error": {...}}``."""

    def decorate(view: Callable[..., dict]) -> Callable[..., JsonResponse]:
        @functools.wraps(view)
        @never_cache
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if request.method not in methods:
                response = _error("method_not_allowed", f"use {' or '.join(methods)}", 405)
                response["Allow"] = ", ".join(methods)
                return response
            if not request.user.is_authenticated:
                return _error("login_required", "log in first", 401)
            try:
                viewer = viewer_for_user(request.user)
                if "call_id" in kwargs:
                    kwargs["call_id"] = _parse_id(kwargs["call_id"], "call")
                return JsonResponse(view(request, viewer, *args, **kwargs))
            except CallCenterError as exc:
                status = next((s for cls, s in _HTTP_STATUS if isinstance(exc, cls)), 400)
                return _error(exc.code, exc.message, status)

        return wrapper

    return decorate


@login_required
@ensure_csrf_cookie
@never_cache
def agent_page(request: HttpRequest) -> HttpResponse:
    try:
        viewer = viewer_for_user(request.user)
    except Forbidden as exc:
        return render(request, "dashboard/not_agent.html", {"message": exc.message}, status=403)
    return render(request, "dashboard/agent.html", {"viewer": viewer, "low_confidence": LOW_CONFIDENCE})


@api("GET")
def calls_list(request: HttpRequest, viewer: Viewer) -> dict:
    calls = selectors.calls_for_viewer(viewer=viewer)
    return {
        "now": timezone.now().isoformat(),
        "viewer": {"user": viewer.username, "agent": viewer.agent_id is not None, "supervisor": viewer.supervisor},
        "calls": [payloads.call_json(c, viewer_agent_id=viewer.agent_id) for c in calls],
    }


@api("GET")
def call_detail(request: HttpRequest, viewer: Viewer, call_id: int) -> dict:
    call = selectors.call_for_viewer(viewer=viewer, call_id=call_id)
    return {
        "now": timezone.now().isoformat(),
        "call": payloads.call_json(call, viewer_agent_id=viewer.agent_id),
        "segments": [payloads.segment_json(s) for s in selectors.segments_after(viewer=viewer, call_id=call_id)],
        "history": payloads.history_json(selectors.caller_history(viewer=viewer, call=call)),
        **analytics_selectors.call_alerts_and_analytics(call_id=call.pk),
    }


@api("GET")
def call_segments(request: HttpRequest, viewer: Viewer, call_id: int) -> dict:
    raw = request.GET.get("after")
    after = None if raw is None else _parse_id(raw, "after")
    segments = selectors.segments_after(viewer=viewer, call_id=call_id, after=after)
    return {"call": call_id, "after": after, "segments": [payloads.segment_json(s) for s in segments]}


@api("POST")
def call_take(request: HttpRequest, viewer: Viewer, call_id: int) -> dict:
    call = services.call_take(viewer=viewer, call_id=call_id)
    call = selectors.call_for_viewer(viewer=viewer, call_id=call.pk)
    return {"call": payloads.call_json(call, viewer_agent_id=viewer.agent_id)}

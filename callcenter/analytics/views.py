"""The supervisors' JSON of a call: ``GET /supervisor/api/calls/<id>``, the
same document as ``manage.py export_call ID`` (segments and analytics).
Needs a logged-in supervisor (``dashboard.access``: staff, or
``calls.view_call``): 401 without a login, 403 for anyone else, 400 for an
id that is not one, 404 for a call that does not exist."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from callcenter.analytics import selectors
from callcenter.dashboard.access import viewer_for_user
from callcenter.errors import Forbidden, NotFound


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@never_cache
def call_export(request: HttpRequest, call_id: str) -> JsonResponse:
    if request.method != "GET":
        response = _error("method_not_allowed", "use GET", 405)
        response["Allow"] = "GET"
        return response
    if not request.user.is_authenticated:
        return _error("login_required", "log in first", 401)
    try:
        viewer = viewer_for_user(request.user)
    except Forbidden as exc:
        return _error(exc.code, exc.message, 403)
    if not viewer.supervisor:
        return _error("forbidden", "only supervisors may export calls", 403)
    if not (call_id.isascii() and call_id.isdigit() and len(call_id) <= 18):
        return _error("invalid", f"call must be an id (a non-negative integer), got {call_id[:40]!r}", 400)
    try:
        return JsonResponse(selectors.call_export(call_id=int(call_id)), json_dumps_params={"ensure_ascii": False})
    except NotFound as exc:
        return _error(exc.code, exc.message, 404)

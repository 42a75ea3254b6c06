"""The segment audio the admin's player loads: staff with permission to
view segments only."""

from __future__ import annotations

import mimetypes

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from callcenter.calls import selectors
from callcenter.errors import NotFound


@require_GET
@login_required(login_url="admin:login")
def segment_audio(request: HttpRequest, segment_id: int) -> FileResponse:
    """The segment's stored audio file (WAV), for the HTML5 player. 403
    without ``calls.view_segment`` (or not staff), 404 when the segment or
    its file is gone (a forgotten caller)."""
    if not (request.user.is_staff and request.user.has_perm("calls.view_segment")):
        raise PermissionDenied("you need permission to view segments to hear their audio")
    try:
        segment = selectors.segment_get(segment_id=segment_id)
    except NotFound:
        raise Http404("no such segment") from None
    if not segment.audio:
        raise Http404("this segment has no audio")
    try:
        handle = segment.audio.open("rb")
    except FileNotFoundError:
        raise Http404("the audio file is gone") from None
    content_type = mimetypes.guess_type(segment.audio.name)[0] or "audio/wav"
    response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response

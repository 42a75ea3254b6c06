"""Prometheus metrics of this process (``GET /metrics`` serves the web
process's). Counters for what the code deliberately drops or gives up on, so
that nothing is swallowed silently."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS_LIVE = Gauge("callcenter_calls_live", "Media sockets with a live call in this web process")
CALLS = Counter("callcenter_calls_total", "Calls opened on the media endpoints", ["protocol"])
SOCKETS_REFUSED = Counter(
    "callcenter_media_sockets_refused_total", "Media sockets closed before a call was created", ["reason"]
)
PROTOCOL_ERRORS = Counter("callcenter_protocol_errors_total", "Malformed frames on media sockets", ["code"])
FRAMES_IGNORED = Counter(
    "callcenter_frames_ignored_total",
    "Frames received after the stream ended or on a track we do not transcribe",
    ["reason"],
)
SEGMENTS = Counter("callcenter_segments_total", "Segments endpointed and queued for recognition", ["reason"])
PARTIALS = Counter("callcenter_partials_total", "Partial hypotheses", ["outcome"])  # sent | dropped | stale
PARTIAL_SECONDS = Histogram(
    "callcenter_partial_seconds",
    "Time to compute one partial hypothesis",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
PROFILE_ERRORS = Counter("callcenter_profile_errors_total", "Voice profiles that could not be used")
RECOGNITIONS = Counter("callcenter_recognitions_total", "Recognition task outcomes", ["outcome"])
DECODER_FALLBACKS = Counter(
    "callcenter_decoder_fallbacks_total", "Segments decoded greedily because the beam search failed on them"
)

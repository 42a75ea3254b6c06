"""Prometheus metrics of this process (``GET /metrics`` serves the web
process's). Counters for what the code deliberately drops or gives up on, so
that nothing is swallowed silently.

Gauges that describe the whole system rather than one process (segments by
status, queue depth, live calls in the database) are computed when
``/metrics`` is scraped (``callcenter.ops.health``), not kept here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS_LIVE = Gauge("callcenter_calls_live", "Media sockets with a live call in this web process")
CALLS = Counter("callcenter_calls_total", "Calls opened on the media endpoints", ["protocol"])
SOCKETS_REFUSED = Counter(
    "callcenter_media_sockets_refused_total", "Media sockets closed before a call was created", ["reason"]
)
STREAMS_REFUSED = Counter(
    "callcenter_streams_refused_total",
    "Media streams refused at capacity (close 1013): too many streams in this process or too deep a queue",
    ["reason"],  # streams | queue_depth
)
STREAMS_CUT = Counter(
    "callcenter_streams_cut_total",
    "Live streams closed by a limit (duration, byte rate, idle)",
    ["reason"],  # max_duration | rate_limited | idle_timeout
)
AGENT_SOCKETS_REFUSED = Counter(
    "callcenter_agent_sockets_refused_total",
    "Agents' feed sockets closed at connect (no login, not an agent, a call not theirs, a bad call id)",
    ["code"],  # login_required | forbidden | invalid | not_found
)
PROTOCOL_ERRORS = Counter("callcenter_protocol_errors_total", "Malformed frames on media sockets", ["code"])
FRAMES_IGNORED = Counter(
    "callcenter_frames_ignored_total",
    "Frames received after the stream ended or on a track we do not transcribe",
    ["reason"],
)
SEGMENTS = Counter("callcenter_segments_total", "Segments endpointed and queued for recognition", ["reason"])
ENQUEUE_FAILURES = Counter(
    "callcenter_enqueue_failures_total",
    "Recognition tasks that could not be queued (broker down); the segment stays pending for the sweeper",
)
PARTIALS = Counter("callcenter_partials_total", "Partial hypotheses", ["outcome"])  # sent | dropped | stale
PARTIAL_SECONDS = Histogram(
    "callcenter_partial_seconds",
    "Time to compute one partial hypothesis",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
PARTIAL_BATCH_SIZE = Histogram(
    "callcenter_partial_batch_size",
    "Calls' partials computed together in one batch (web process)",
    buckets=(1, 2, 4, 8, 16, 32),
)
PARTIAL_THREAD_SECONDS = Counter(
    "callcenter_partial_thread_seconds_total",
    "The partials thread's batches: wall seconds computing them, and that thread's own CPU seconds in them",
    ["clock"],  # wall | cpu
)
PROFILE_ERRORS = Counter("callcenter_profile_errors_total", "Voice profiles that could not be used")
RECOGNITIONS = Counter("callcenter_recognitions_total", "Recognition task outcomes", ["outcome"])
# offered | withdrawn (web); computed | skipped | failed | used | missed (worker)
SPECULATIONS = Counter("callcenter_speculative_finals_total", "Speculative finals (recognized before the endpoint)", ["outcome"])
RECOGNITION_SECONDS = Histogram(
    "callcenter_recognition_seconds",
    "Endpoint detected -> final stored (queue wait + recognition), per segment (worker process)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60),
)
RECOGNITION_BATCH_SIZE = Histogram(
    "callcenter_recognition_batch_size",
    "Segments recognized together by one recognition task (batches of more than one)",
    buckets=(2, 3, 4, 6, 8, 12, 16),
)
DECODER_FALLBACKS = Counter(
    "callcenter_decoder_fallbacks_total", "Segments decoded greedily because the beam search failed on them"
)
SWEEPS = Counter(
    "callcenter_sweeps_total",
    "What the maintenance sweeper did (worker process)",
    ["action"],  # requeued | call_closed | segment_failed
)
LOGIN_THROTTLED = Counter("callcenter_login_throttled_total", "Login attempts refused by the rate limiter (429)")
# Caller adaptation (tasks/adaptation.py increments these): runs by outcome
# (accepted | rejected | failed) and the held-out WER change of each run
# (new - old; negative is better).
ADAPTATIONS = Counter("callcenter_adaptations_total", "Caller adaptation runs", ["outcome"])
ADAPTATION_WER_DELTA = Histogram(
    "callcenter_adaptation_wer_delta",
    "Held-out WER of the adapted profile minus the WER before adaptation (negative: better)",
    buckets=(-0.5, -0.2, -0.1, -0.05, -0.02, -0.01, 0, 0.01, 0.02, 0.05, 0.1, 0.5),
)
ADAPTATION_SECONDS = Histogram(
    "callcenter_adaptation_seconds", "Time of one caller adaptation", buckets=(0.5, 1, 2, 5, 10, 20, 60, 120, 300)
)
TRAININGS = Counter("callcenter_trainings_total", "Periodic meta-training outcomes", ["outcome"])
MODEL_ERRORS = Counter(
    "callcenter_model_errors_total", "Active model versions that could not be loaded (the shipped model served)"
)
REDACTIONS = Counter("callcenter_redactions_total", "Card numbers redacted from transcripts", ["where"])

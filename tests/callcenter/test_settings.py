"""Settings come from the environment, and a bad value stops a process at
start with one clear line."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PATH = REPO_ROOT / "callcenter" / "settings.py"
PRODUCTION_KEY = "k7$w!q9z#r2@x5^b8&n4*m1(v6)c3_p0-h8+j2=f5;g9:d4,s7.a1"


@pytest.fixture
def load_settings(tmp_path):
    """Evaluate settings.py afresh under exactly the given environment."""

    def load(**env: str) -> dict:
        env.setdefault("CALLCENTER_VAR_DIR", str(tmp_path / "var"))
        with mock.patch.dict(os.environ, env, clear=True):
            return runpy.run_path(str(SETTINGS_PATH))

    return load


def test_without_environment_the_one_machine_defaults_apply(load_settings, tmp_path):
    settings = load_settings()

    assert settings["DEBUG"] is True
    assert settings["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert settings["DATABASES"]["default"]["NAME"] == str(tmp_path / "var" / "db.sqlite3")
    socket_path = str(tmp_path / "var" / "run" / "redis.sock")
    assert settings["EMBEDDED_REDIS_SOCKET"] == socket_path
    assert settings["CELERY_BROKER_URL"] == settings["CELERY_RESULT_BACKEND"] == f"redis+socket://{socket_path}"
    assert [host["address"] for host in settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]] == [
        f"unix://{socket_path}"
    ]
    assert settings["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]
    assert settings["MEDIA_ROOT"] == str(tmp_path / "var" / "media")
    assert settings["ASR_CHECKPOINT"] == str(REPO_ROOT / "asr_core" / "checkpoints" / "base.pt")
    # Real callers first: Whisper (pretrained on real speech) for partials and finals, with the
    # decoding chosen on real speech (asr_core/defaults.py, which `asr_core evaluate` measures).
    assert (settings["ASR_FINAL_BACKBONE"], settings["ASR_PARTIAL_BACKBONE"]) == ("whisper-tiny", "whisper-tiny")
    assert (settings["ASR_WHISPER_INT8"], settings["ASR_WHISPER_BEAM_SIZE"], settings["ASR_WHISPER_TRIM_S"]) == (
        "decoder", 5, None)  # fmt: skip
    assert settings["ASR_WHISPER_LIVE_MARGIN_S"] == 1.0 and settings["ASR_WHISPER_TAIL_POOL"] == 5
    assert settings["ADAPTATION_WHISPER"] == "supervised" and settings["STREAM_MAX_SPEED"] == 4
    assert settings["STREAM_SPECULATIVE_FINALS"] is True


def test_database_and_redis_urls_configure_postgres_celery_and_channels(load_settings):
    settings = load_settings(
        DATABASE_URL="postgres://cc:secret@db.internal:5433/callcenter", REDIS_URL="redis://cache:6379/2"
    )

    database = settings["DATABASES"]["default"]
    assert (database["ENGINE"], database["HOST"], database["PORT"], database["NAME"], database["USER"]) == (
        "django.db.backends.postgresql", "db.internal", 5433, "callcenter", "cc",
    )  # fmt: skip
    assert settings["CELERY_BROKER_URL"] == settings["CELERY_RESULT_BACKEND"] == "redis://cache:6379/2"
    assert [host["address"] for host in settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]] == [
        "redis://cache:6379/2"
    ]
    assert settings["EMBEDDED_REDIS_SOCKET"] is None


def test_production_variables_turn_debug_off_and_security_on(load_settings):
    settings = load_settings(
        DJANGO_SECRET_KEY=PRODUCTION_KEY,
        DJANGO_ALLOWED_HOSTS="calls.example.com, api.example.com",
        DJANGO_SECURE="1",
        ASR_CHECKPOINT="/models/meta-3.pt",
    )

    assert settings["DEBUG"] is False
    assert settings["SECRET_KEY"] == PRODUCTION_KEY
    assert settings["ALLOWED_HOSTS"] == ["calls.example.com", "api.example.com"]
    assert settings["SECURE_SSL_REDIRECT"] and settings["SESSION_COOKIE_SECURE"] and settings["CSRF_COOKIE_SECURE"]
    assert settings["SECURE_HSTS_SECONDS"] == 31_536_000
    assert settings["ASR_CHECKPOINT"] == "/models/meta-3.pt"


@pytest.mark.parametrize("value, mode", [("decoder", "decoder"), ("ALL", "all"), ("off", "off"), ("1", "all"),
                                         ("false", "off"), ("", "decoder")])
def test_whisper_int8_takes_a_mode_or_a_boolean(load_settings, value, mode):
    assert load_settings(ASR_WHISPER_INT8=value)["ASR_WHISPER_INT8"] == mode


def test_operations_endpoints_default_to_loopback_and_take_a_token_and_networks(load_settings):
    import ipaddress

    default = load_settings()
    configured = load_settings(OPS_TOKEN="x" * 32, OPS_ALLOWED_NETWORKS="10.0.0.0/8, 192.168.1.7,fd00::/8")
    token_only = load_settings(OPS_ALLOWED_NETWORKS="")

    assert default["OPS_TOKEN"] == ""
    assert default["OPS_ALLOWED_NETWORKS"] == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert configured["OPS_TOKEN"] == "x" * 32
    assert [str(n) for n in configured["OPS_ALLOWED_NETWORKS"]] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]
    assert token_only["OPS_ALLOWED_NETWORKS"] == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysqlx://db/callcenter"}, "DATABASE_URL has scheme 'mysqlx'"),
        ({"DATABASE_URL": "postgres://db:notaport/callcenter"}, "DATABASE_URL could not be parsed"),
        ({"DATABASE_URL": "postgres://db:5432"}, "DATABASE_URL names no database"),
        ({"REDIS_URL": "amqp://guest@rabbit//"}, "REDIS_URL has scheme 'amqp'"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_HSTS_SECONDS": "a year"}, "DJANGO_HSTS_SECONDS='a year' is not an integer"),
        ({"CELERY_WORKER_CONCURRENCY": "0"}, "CELERY_WORKER_CONCURRENCY='0' must be at least 1"),
        ({"DJANGO_LOG_LEVEL": "loud"}, "DJANGO_LOG_LEVEL='LOUD' is not a logging level"),
        ({"ASR_FINAL_BACKBONE": "whisper-large"}, "ASR_FINAL_BACKBONE='whisper-large' must be 'small'"),
        ({"ASR_WHISPER_TRIM_S": "soon"}, "ASR_WHISPER_TRIM_S='soon' must be a number of seconds or 'none'"),
        ({"ASR_WHISPER_TRIM_S": "45"}, "ASR_WHISPER_TRIM_S='45' must be between 0 and 30 seconds"),
        ({"ASR_WHISPER_LIVE_MARGIN_S": "1s"}, "ASR_WHISPER_LIVE_MARGIN_S='1s' must be a number of seconds or 'none'"),
        ({"ASR_WHISPER_LIVE_MARGIN_S": "-0.5"}, "ASR_WHISPER_LIVE_MARGIN_S='-0.5' must be between 0 and 30 seconds"),
        ({"ASR_WHISPER_TAIL_POOL": "7"}, "ASR_WHISPER_TAIL_POOL=7 must divide 1500 and be at most 50"),
        ({"ASR_WHISPER_TAIL_POOL": "0"}, "ASR_WHISPER_TAIL_POOL='0' must be at least 1"),
        ({"ASR_WHISPER_TAIL_POOL": "five"}, "ASR_WHISPER_TAIL_POOL='five' is not an integer"),
        ({"ASR_WHISPER_INT8": "maybe"}, "ASR_WHISPER_INT8='maybe' must be one of off, decoder, all"),
        ({"ASR_PARTIAL_BACKBONE": "vosk"}, "ASR_PARTIAL_BACKBONE='vosk' must be 'small', 'whisper-tiny'"),
        ({"ASR_PARTIAL_ENCODER": "fp16"}, "ASR_PARTIAL_ENCODER='fp16' must be one of auto, int8, bfloat16, float32"),
        ({"ASR_WHISPER_BEAM_SIZE": "0"}, "ASR_WHISPER_BEAM_SIZE='0' must be at least 1"),
        ({"ASR_WHISPER_BEAM_SIZE": "32"}, "ASR_WHISPER_BEAM_SIZE=32 must be at most 16"),
        ({"ADAPTATION_WHISPER": "sometimes"}, "ADAPTATION_WHISPER='sometimes' must be 'off', 'supervised' or 'all'"),
        ({"STREAM_MAX_SPEED": "0"}, "STREAM_MAX_SPEED='0' must be at least 1"),
        ({"STREAM_PARTIAL_MAX_BUSY_PERCENT": "0"}, "STREAM_PARTIAL_MAX_BUSY_PERCENT='0' must be at least 1"),
        ({"STREAM_PARTIAL_MAX_BUSY_PERCENT": "150"}, "STREAM_PARTIAL_MAX_BUSY_PERCENT=150 must be 1-100"),
        ({"STREAM_PARTIAL_NICE": "20"}, "STREAM_PARTIAL_NICE=20 must be 0-19"),
        ({"STREAM_PARTIAL_NICE": "-5"}, "STREAM_PARTIAL_NICE='-5' must be at least 0"),
        ({"TRAINING_INTERVAL_S": "9" * 400}, "TRAINING_INTERVAL_S='999"),
        ({"SEGMENT_SWEEP_INTERVAL_S": "1" + "0" * 10}, "SEGMENT_SWEEP_INTERVAL_S='10000000000' must be at most 1000000000"),
        ({"ASR_THREADS": "99999999999999999999999"}, "ASR_THREADS='99999999999999999999999' must be at most 256"),
        ({"STREAM_SPECULATIVE_FINALS": "perhaps"}, "STREAM_SPECULATIVE_FINALS='perhaps' is not a boolean"),
        ({"STREAM_PARTIAL_BATCH_MAX": "many"}, "STREAM_PARTIAL_BATCH_MAX='many' is not an integer"),
        ({"LOGIN_RATE_LIMIT_PER_ADDRESS": "5"}, "LOGIN_RATE_LIMIT_PER_ADDRESS=5 must be at least LOGIN_RATE_LIMIT=10"),
        ({"OPS_TOKEN": "short"}, "OPS_TOKEN must be at least 16 printable characters without spaces"),
        ({"OPS_TOKEN": "sixteen chars and a space"}, "OPS_TOKEN must be at least 16 printable characters"),
        ({"OPS_ALLOWED_NETWORKS": "10.0.0.0/8, intranet"}, "OPS_ALLOWED_NETWORKS: 'intranet' is not a network"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(load_settings, env, message):
    with pytest.raises(ImproperlyConfigured) as caught:
        load_settings(**env)
    assert str(caught.value).startswith(message)


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "manage.py", "check"],
        [sys.executable, "-m", "daphne", "callcenter.asgi:application"],
        [sys.executable, "-m", "celery", "-A", "callcenter", "worker"],
        [sys.executable, "-m", "callcenter.ops.run"],
    ],
    ids=["manage.py", "daphne", "celery", "run"],
)
def test_bad_database_url_stops_each_entry_point_at_start_with_one_line(argv):
    result = _run(argv, DATABASE_URL="postgress://db/callcenter")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "configuration error: DATABASE_URL has scheme 'postgress'; "
        "expected postgres://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    )

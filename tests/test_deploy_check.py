"""`manage.py check --deploy` is clean with the production variables set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": "k7$w!q9z#r2@x5^b8&n4*m1(v6)c3_p0-h8+j2=f5;g9:d4,s7.a1",
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "calls.example.com",
    "DJANGO_SECURE": "1",
}


def _check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_check_is_clean_for_production_settings():
    result = _check(PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_check_flags_the_development_defaults():
    result = _check({"DJANGO_SECRET_KEY": "", "DJANGO_DEBUG": "1", "DJANGO_SECURE": "0"})

    assert result.returncode == 1
    for warning in ["security.W004", "security.W008", "security.W009", "security.W018"]:
        assert warning in result.stderr

"""Start-up helpers shared by every entry point (manage.py, ASGI, Celery, run).

A configuration mistake must stop a process at start with one line that
names the variable, not with a traceback, and never later inside a request.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from django.core.exceptions import ImproperlyConfigured

SETTINGS_MODULE = "callcenter.settings"
EXIT_CONFIGURATION = 2


def use_project_settings() -> None:
    """Point Django at this project's settings unless the caller chose others."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)


def exit_on_configuration_error(exc: ImproperlyConfigured) -> NoReturn:
    print(f"configuration error: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIGURATION)


def setup_django() -> None:
    """``django.setup()``, or exit with one line naming the misconfigured variable."""
    import django

    use_project_settings()
    try:
        django.setup()
    except ImproperlyConfigured as exc:
        exit_on_configuration_error(exc)

"""Celery tasks, split by domain. Thin: IDs in, services (and asr_core) do the
work, results out.

Import every domain module here: the worker imports this package at start
(``imports`` in ``callcenter/celery.py``) and registers what it finds.
"""

from . import adaptation, analytics, maintenance, recognition, system, training  # noqa: F401

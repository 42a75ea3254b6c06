"""The call-center Django project.

The Celery app is imported here so that ``@shared_task`` binds to it in every
process that loads Django (web server, worker, management commands).
"""

from .celery import app as celery_app

__all__ = ("celery_app",)

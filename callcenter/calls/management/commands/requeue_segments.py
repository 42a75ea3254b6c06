"""``manage.py requeue_segments``: queue recognition again for segments that
have their audio but no result (failed, or pending with a lost task).

    python manage.py requeue_segments                      # failed and pending ones
    python manage.py requeue_segments --status failed --call 42
    python manage.py requeue_segments --older-than 300 --dry-run
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from callcenter.calls import selectors, services
from callcenter.errors import CallCenterError


class Command(BaseCommand):
    help = "Queue recognition again for failed or pending segments that have audio."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status", choices=["pending", "failed", "all"], default="all", help="which segments (default: all)"
        )
        parser.add_argument(
            "--older-than", type=float, default=0, metavar="SECONDS", help="only segments unchanged this long"
        )
        parser.add_argument("--call", type=int, metavar="ID", help="only this call's segments")
        parser.add_argument("--dry-run", action="store_true", help="list them, queue nothing")

    def handle(self, *args, status: str, older_than: float, call: int | None, dry_run: bool, **options) -> None:
        if not 0 <= older_than <= selectors.MAX_REQUEUE_AGE_S:  # also NaN
            raise CommandError(
                f"--older-than must be seconds from 0 to {selectors.MAX_REQUEUE_AGE_S} (10 years), got {older_than:g}"
            )
        statuses = ["pending", "failed"] if status == "all" else [status]
        try:
            if call is not None:
                selectors.call_get(call_id=call)
            ids = selectors.segments_to_requeue(statuses=statuses, older_than_s=older_than, call_id=call)
            if dry_run:
                self.stdout.write(f"{len(ids)} segment(s) would be queued: {ids}")
                return
            queued = services.segments_requeue(segment_ids=ids)
        except CallCenterError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{queued} segment(s) queued for recognition")

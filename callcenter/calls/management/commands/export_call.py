"""``manage.py export_call ID [--format json|csv]``: print a call with its
segments (speaker, times, text, words) and its analytics.

    python manage.py export_call 42                 # JSON, as the supervisors' URL serves it
    python manage.py export_call 42 --format csv    # one table: segment rows, then analytics rows
    python manage.py export_call 42 --compute       # compute the analytics first (a call ended without them)

The CSV has the columns ``kind,speaker,start_ms,end_ms,text,words,metric,value``:
``kind`` is ``segment`` (``words`` is the JSON word list) or ``analytics``
(``metric`` and ``value``; ``speaker`` for the per-party figures) or
``category``.
"""

from __future__ import annotations

import csv
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from callcenter.analytics import selectors, services
from callcenter.errors import CallCenterError

CSV_COLUMNS = ("kind", "speaker", "start_ms", "end_ms", "text", "words", "metric", "value")
PER_PARTY = ("talk_ms", "interruptions", "words_per_minute", "sentiment")
SCALARS = ("duration_ms", "silence_ms", "longest_silence_ms", "overlap_ms")


def csv_rows(export: dict) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for s in export["segments"]:
        rows.append({"kind": "segment", "speaker": s["speaker"], "start_ms": s["start_ms"], "end_ms": s["end_ms"],
                     "text": s["text"], "words": json.dumps(s["words"], ensure_ascii=False)})  # fmt: skip
    analytics = export["analytics"]
    if analytics is not None:
        for metric in SCALARS:
            rows.append({"kind": "analytics", "metric": metric, "value": analytics[metric]})
        for metric in PER_PARTY:
            for party, value in analytics[metric].items():
                rows.append({"kind": "analytics", "speaker": party, "metric": metric,
                             "value": "" if value is None else value})  # fmt: skip
    for c in export["categories"]:
        rows.append({"kind": "category", "speaker": c["speaker"] or "", "start_ms": c["at_ms"], "text": c["text"],
                     "metric": "category", "value": c["name"]})  # fmt: skip
    return rows


class Command(BaseCommand):
    help = "Print a call with its segments and analytics as JSON or CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("call_id", type=int, metavar="ID", help="the call's id")
        parser.add_argument("--format", choices=["json", "csv"], default="json", help="output format (default json)")
        parser.add_argument("--compute", action="store_true", help="compute the analytics first (stored)")

    def handle(self, *args, call_id: int, format: str, compute: bool, **options) -> None:
        try:
            if compute:
                services.analytics_compute(call_id=call_id)
            export = selectors.call_export(call_id=call_id)
        except CallCenterError as exc:
            raise CommandError(exc.message) from None
        if format == "json":
            self.stdout.write(json.dumps(export, indent=2, ensure_ascii=False))
            return
        writer = csv.DictWriter(self.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(export))

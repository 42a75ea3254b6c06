"""Call analytics in the worker (``callcenter.analytics``).

- ``analytics.final`` (segment id): match the category rules on a stored
  final; each new category whose rule raises alerts goes to the call's
  group and the agents' group as an ``alert`` message (the agent page and
  supervisors). Queued by ``segment_store_result`` after commit.
- ``analytics.call`` (call id): when the call has ended, wait for its last
  finals (re-queued every ``WAIT_S`` while segments are pending, for at most
  ``WAIT_RETRIES`` times; then it computes with what is there), match every
  final again and decide the ``absent`` rules, store the figures and push an
  ``analytics`` message. Queued by ``call_end`` after commit.

Both are idempotent (a category once per call, one analytics row per call)
and retried on transient errors only.
"""

from __future__ import annotations

import logging

from celery import shared_task

from callcenter.analytics import selectors, services
from callcenter.errors import NotFound
from callcenter.live import messages

# One publisher per worker process: its event loop keeps the channel layer's
# Redis connections open between tasks (the recognition task's).
from callcenter.live.publish import publisher
from tasks.recognition import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

WAIT_S = 2
WAIT_RETRIES = 60  # two minutes of pending finals at most
MAX_RETRIES = 3


def _publish(call_id: int, message: dict) -> None:
    publisher.send(messages.groups_for_call(call_id), messages.layer_event(message))


def _alert(categories) -> None:
    for category in categories:
        if category.rule.alert:
            _publish(category.call_id, services.alert_message(category))


@shared_task(name="analytics.final", bind=True, soft_time_limit=30, time_limit=40, max_retries=MAX_RETRIES)
def match_final(self, *, segment_id: int) -> dict[str, object]:
    """Categories a final raised; alerts pushed for those that alert."""
    try:
        categories = services.categories_match_segment(segment_id=segment_id)
        _alert(categories)
    except NotFound:
        logger.warning("segment #%s no longer exists: no categories to match", segment_id)
        return {"segment": segment_id, "categories": []}
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 10)) from None
    return {"segment": segment_id, "categories": [c.rule.name for c in categories]}


@shared_task(name="analytics.call", bind=True, soft_time_limit=60, time_limit=70, max_retries=WAIT_RETRIES)
def call_analytics(self, *, call_id: int) -> dict[str, object]:
    """The call's figures and end-of-call categories, once its finals are in."""
    try:
        if selectors.segments_pending_before(call_id=call_id, before_ms=None):
            if self.request.retries < WAIT_RETRIES:
                raise self.retry(countdown=WAIT_S)
            logger.warning("call #%s: segments still pending after %d s; analytics without them",
                           call_id, WAIT_S * WAIT_RETRIES)  # fmt: skip
        analytics, categories = services.call_finish_analytics(call_id=call_id)
        _alert(categories)
        names = [c.rule.name for c in selectors.call_categories(call_id=call_id)]
        _publish(call_id, {"type": "analytics", "call": call_id, **selectors.analytics_dict(analytics, names)})
    except NotFound:
        logger.warning("call #%s no longer exists: no analytics", call_id)
        return {"call": call_id, "status": "gone"}
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=min(2**min(self.request.retries, 3), 10)) from None
    return {"call": call_id, "status": "computed", "categories": names}

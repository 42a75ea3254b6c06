"""Writes of call analytics: the figures of an ended call, the categories a
final raises, and category rules (validated: a rule that does not compile
is refused with ``InvalidRule`` and nothing is stored)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from prometheus_client import Counter

from callcenter.analytics import compute, rules, selectors, sentiment
from callcenter.analytics.models import CallAnalytics, CallCategory, CategoryRule
from callcenter.calls.models import Call, Segment
from callcenter.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

CATEGORIES = Counter("callcenter_call_categories_total", "Categories raised on calls", ["match"])
RULES_SKIPPED = Counter(
    "callcenter_category_rules_skipped_total", "Stored category rules skipped because they do not compile"
)


# --- Rules ----------------------------------------------------------------------


def category_rule_create(
    *,
    name: str,
    phrases: str,
    match: str = rules.MATCH_ANY,
    party: str = "any",
    window_start_s: float | None = None,
    window_end_s: float | None = None,
    alert: bool = True,
    description: str = "",
) -> CategoryRule:
    """Store a rule after compiling it: ``InvalidRule`` (nothing stored) when it does not compile."""
    rule = CategoryRule(
        name=(name or "").strip(), phrases=phrases, match=match, party=party, window_start_s=window_start_s,
        window_end_s=window_end_s, alert=alert, description=description,
    )  # fmt: skip
    rule.compiled()
    if CategoryRule.objects.filter(name=rule.name).exists():
        raise InvalidInput(f"a category rule named {rule.name!r} already exists", rule=rule.name)
    rule.save()
    return rule


def _compiled_rules() -> list[tuple[CategoryRule, rules.CompiledRule]]:
    """Enabled rules that compile; one that does not (stored around the admin's check) is skipped, logged."""
    out = []
    for rule in selectors.category_rules_enabled():
        try:
            out.append((rule, rule.compiled()))
        except rules.InvalidRule as exc:
            RULES_SKIPPED.inc()
            logger.error("category rule #%s skipped: %s", rule.pk, exc.message)
    return out


# --- Categories on finals ---------------------------------------------------------


def _category_add(
    *, call_id: int, rule: CategoryRule, segment: Segment | None, speaker: str, text: str, at_ms: int
) -> CallCategory | None:
    """The new category, or None when the call already has it (a final seen twice, a race)."""
    try:
        with transaction.atomic():
            category = CallCategory.objects.create(
                call_id=call_id, rule=rule, segment=segment, speaker=speaker, matched_text=text[:300], at_ms=at_ms
            )
    except IntegrityError:
        if CallCategory.objects.filter(call_id=call_id, rule=rule).exists():
            return None
        raise
    CATEGORIES.labels(rule.match).inc()
    return category


def _absent_decided(
    *, call_id: int, rule: CategoryRule, compiled: rules.CompiledRule, now_ms: int | None, ended: bool
) -> CallCategory | None:
    """An ``absent`` rule fires once its window has passed (``now_ms`` past its
    end, or the call over) and no final of its party said a phrase in it."""
    if CallCategory.objects.filter(call_id=call_id, rule=rule).exists():
        return None
    window_end = compiled.window_end_ms
    if not ended and (window_end is None or now_ms is None or now_ms <= window_end):
        return None
    for segment in selectors.recognized_segments(call_id=call_id):
        if not compiled.applies_to(segment.speaker):
            continue
        final = rules.Final(text=segment.best_text, words=segment.words, start_ms=segment.start_ms)
        if rules.find(compiled, final) is not None:
            return None
    if not ended and selectors.segments_pending_before(call_id=call_id, before_ms=window_end):
        return None  # a final in the window may still say it
    at_ms = window_end if window_end is not None else max(now_ms or 0, 0)
    return _category_add(call_id=call_id, rule=rule, segment=None, speaker="", text="", at_ms=at_ms)


def categories_match_segment(*, segment_id: int) -> list[CallCategory]:
    """Match the enabled rules on one recognized final; the categories it raised
    (those the call did not have yet), for live alerts. ``absent`` rules whose
    window this final's start has passed are decided here too."""
    segment = Segment.objects.select_related("call").filter(pk=segment_id).first()
    if segment is None:
        raise NotFound(f"segment #{segment_id} does not exist", segment_id=segment_id)
    if segment.status != Segment.Status.RECOGNIZED:
        return []
    final = rules.Final(text=segment.best_text, words=segment.words, start_ms=segment.start_ms)
    raised = []
    for rule, compiled in _compiled_rules():
        if compiled.match == rules.MATCH_ABSENT:
            category = _absent_decided(
                call_id=segment.call_id, rule=rule, compiled=compiled, now_ms=segment.start_ms,
                ended=segment.call.status != Call.Status.LIVE,
            )  # fmt: skip
        elif compiled.applies_to(segment.speaker) and (hit := rules.find(compiled, final)) is not None:
            category = _category_add(
                call_id=segment.call_id, rule=rule, segment=segment, speaker=segment.speaker, text=hit.text,
                at_ms=hit.at_ms,
            )  # fmt: skip
        else:
            category = None
        if category is not None:
            raised.append(category)
    return raised


def categories_finish_call(*, call_id: int) -> list[CallCategory]:
    """At the end of the call: every rule on every final (a final recognized
    after a rule was added), and the ``absent`` rules decided."""
    raised = []
    for segment_id in selectors.recognized_segment_ids(call_id=call_id):
        raised.extend(categories_match_segment(segment_id=segment_id))
    for rule, compiled in _compiled_rules():
        if compiled.match == rules.MATCH_ABSENT:
            category = _absent_decided(call_id=call_id, rule=rule, compiled=compiled, now_ms=None, ended=True)
            if category is not None:
                raised.append(category)
    return raised


def alert_message(category: CallCategory) -> dict[str, object]:
    """The live alert the agent page and supervisors get."""
    return {
        "type": "alert",
        "call": category.call_id,
        "category": category.rule.name,
        "description": category.rule.description,
        "match": category.rule.match,
        "speaker": category.speaker or None,
        "segment": category.segment_id,
        "text": category.matched_text,
        "at_ms": category.at_ms,
    }


# --- Figures at the end of the call ---------------------------------------------


def analytics_compute(*, call_id: int, min_interruption_ms: int = compute.DEFAULT_MIN_INTERRUPTION_MS) -> CallAnalytics:
    """Compute and store the call's figures (again: overwritten, one row per call)."""
    call = Call.objects.filter(pk=call_id).first()
    if call is None:
        raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
    segments = list(selectors.call_segments(call_id=call_id))
    turns = []
    scored: dict[str, list[tuple[float | None, int]]] = {p: [] for p in compute.PARTIES}
    per_segment: dict[str, float | None] = {}
    for segment in segments:
        start, end = segment.speech_span_ms
        text = segment.best_text if segment.status == Segment.Status.RECOGNIZED else ""
        words = len(rules.normalize_tokens(text))
        turns.append(compute.Turn(speaker=segment.speaker, start_ms=start, end_ms=end, words=words))
        value = sentiment.score(text)
        per_segment[str(segment.pk)] = value
        scored[segment.speaker].append((value, words))
    if call.ended_at is not None:
        duration_ms = round((call.ended_at - call.started_at).total_seconds() * 1000)
    else:
        duration_ms = None
    # The audio's clock, not the wall clock, places the turns: the call lasts at least to its last turn.
    figures = compute.call_figures(turns, duration_ms=duration_ms, min_interruption_ms=min_interruption_ms)
    values = {
        "duration_ms": figures.duration_ms,
        "talk_ms_customer": figures.talk_ms["customer"],
        "talk_ms_agent": figures.talk_ms["agent"],
        "silence_ms": figures.silence_ms,
        "longest_silence_ms": figures.longest_silence_ms,
        "overlap_ms": figures.overlap_ms,
        "interruptions_customer": figures.interruptions["customer"],
        "interruptions_agent": figures.interruptions["agent"],
        "wpm_customer": figures.words_per_minute["customer"],
        "wpm_agent": figures.words_per_minute["agent"],
        "sentiment_customer": sentiment.weighted_mean(scored["customer"]),
        "sentiment_agent": sentiment.weighted_mean(scored["agent"]),
        "min_interruption_ms": min_interruption_ms,
        "timeline": {
            "speech": {p: [list(i) for i in figures.speech[p]] for p in compute.PARTIES},
            "silences": [list(i) for i in figures.silences],
            "overlaps": [list(i) for i in figures.overlaps],
            "segments": per_segment,
        },
    }
    with transaction.atomic():
        analytics, _ = CallAnalytics.objects.update_or_create(call_id=call_id, defaults=values)
    logger.info(
        "call #%s analytics: talk %s/%s ms, overlap %s ms, interruptions %s/%s",
        call_id, figures.talk_ms["customer"], figures.talk_ms["agent"], figures.overlap_ms,
        figures.interruptions["customer"], figures.interruptions["agent"],
    )  # fmt: skip
    return analytics


def call_finish_analytics(*, call_id: int) -> tuple[CallAnalytics, list[CallCategory]]:
    """What runs when a call ends: the figures, and the categories decided at the end."""
    categories = categories_finish_call(call_id=call_id)
    return analytics_compute(call_id=call_id), categories

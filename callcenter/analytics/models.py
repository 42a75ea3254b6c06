"""What call analytics stores: one ``CallAnalytics`` per ended call, the
category rules administrators write, and the categories each call got."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from callcenter.analytics import rules
from callcenter.calls.models import Call, Segment


class CallAnalytics(models.Model):
    """The figures of one call, computed when it ends (and again on request)."""

    call = models.OneToOneField(Call, on_delete=models.CASCADE, related_name="analytics")
    duration_ms = models.PositiveIntegerField()
    talk_ms_customer = models.PositiveIntegerField("customer talk time (ms)")
    talk_ms_agent = models.PositiveIntegerField("agent talk time (ms)")
    silence_ms = models.PositiveIntegerField("non-talk time (ms)")
    longest_silence_ms = models.PositiveIntegerField("longest silence (ms)")
    overlap_ms = models.PositiveIntegerField("overlap (ms)")
    interruptions_customer = models.PositiveIntegerField(default=0)
    interruptions_agent = models.PositiveIntegerField(default=0)
    wpm_customer = models.FloatField("customer words per minute", null=True, blank=True)
    wpm_agent = models.FloatField("agent words per minute", null=True, blank=True)
    sentiment_customer = models.FloatField(null=True, blank=True, help_text="VADER compound, -1..1")
    sentiment_agent = models.FloatField(null=True, blank=True, help_text="VADER compound, -1..1")
    timeline = models.JSONField(
        default=dict, blank=True,
        help_text='{"speech": {"customer": [[start, end], ...], "agent": [...]}, "silences": [...], '
        '"overlaps": [...], "segments": {segment id: sentiment}} in ms',
    )  # fmt: skip
    min_interruption_ms = models.PositiveIntegerField(default=300)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-computed_at", "-id"]
        verbose_name = "call analytics"
        verbose_name_plural = "call analytics"
        constraints = [
            models.CheckConstraint(
                condition=Q(talk_ms_customer__lte=F("duration_ms")) & Q(talk_ms_agent__lte=F("duration_ms"))
                & Q(silence_ms__lte=F("duration_ms")) & Q(longest_silence_ms__lte=F("silence_ms")),
                name="callanalytics_times_within_call",
            ),  # fmt: skip
            models.CheckConstraint(
                condition=(Q(sentiment_customer__isnull=True) | Q(sentiment_customer__gte=-1, sentiment_customer__lte=1))
                & (Q(sentiment_agent__isnull=True) | Q(sentiment_agent__gte=-1, sentiment_agent__lte=1)),
                name="callanalytics_sentiment_in_range",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"analytics of call #{self.call_id}"


class RuleMatch(models.TextChoices):
    ANY = rules.MATCH_ANY, "any of the phrases is said"
    ALL = rules.MATCH_ALL, "every word of the set is said in one final"
    ABSENT = rules.MATCH_ABSENT, "none of the phrases is said in the window"


class RuleParty(models.TextChoices):
    CUSTOMER = "customer", "customer"
    AGENT = "agent", "agent"
    ANY = "any", "either party"


class CategoryRule(models.Model):
    """A rule an administrator writes: which words, said by whom, when."""

    Match = RuleMatch
    Party = RuleParty

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    phrases = models.TextField(
        help_text="One per line. Words match whole words, case and punctuation ignored; 'word*' matches words "
        "it begins; a line 're:...' is a regular expression over the lower-case text. For 'all', one word a line."
    )
    match = models.CharField(max_length=8, choices=RuleMatch.choices, default=RuleMatch.ANY)
    party = models.CharField(max_length=8, choices=RuleParty.choices, default=RuleParty.ANY)
    window_start_s = models.FloatField(
        "window from (s)", null=True, blank=True, help_text="Seconds from the start of the call; empty: 0."
    )
    window_end_s = models.FloatField(
        "window to (s)", null=True, blank=True, help_text="Seconds from the start of the call; empty: the whole call."
    )
    alert = models.BooleanField(default=True, help_text="Raise a live alert to the agent and supervisors.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="categoryrule_name_not_empty"),
            models.CheckConstraint(condition=Q(match__in=RuleMatch.values), name="categoryrule_match_valid"),
            models.CheckConstraint(condition=Q(party__in=RuleParty.values), name="categoryrule_party_valid"),
            models.CheckConstraint(
                condition=Q(window_start_s__isnull=True) | Q(window_start_s__gte=0),
                name="categoryrule_window_start_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(window_end_s__isnull=True) | Q(window_start_s__isnull=True)
                | Q(window_end_s__gt=F("window_start_s")),
                name="categoryrule_window_ordered",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return self.name if self.enabled else f"{self.name} (disabled)"

    def compiled(self) -> rules.CompiledRule:
        """The rule ready to match; ``rules.InvalidRule`` when it does not compile."""
        return rules.compile_rule(
            name=self.name,
            phrases=self.phrases,
            match=self.match,
            party=self.party,
            window_start_s=self.window_start_s,
            window_end_s=self.window_end_s,
        )

    def clean(self) -> None:
        try:
            self.compiled()
        except rules.InvalidRule as exc:
            raise ValidationError({"phrases": exc.message} if "phrase" in exc.details else exc.message) from None


class CallCategory(models.Model):
    """A category a call got: the rule, and the final (and words) that raised it."""

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="categories", db_index=False)
    rule = models.ForeignKey(CategoryRule, on_delete=models.CASCADE, related_name="matches")
    segment = models.ForeignKey(
        Segment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The final that matched (none for an 'absent' rule).",
    )  # fmt: skip
    speaker = models.CharField(max_length=8, blank=True)
    matched_text = models.CharField(max_length=300, blank=True)
    at_ms = models.PositiveIntegerField(help_text="When, in ms from the start of the call.")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["call_id", "at_ms", "id"]
        verbose_name_plural = "call categories"
        constraints = [
            models.UniqueConstraint(
                fields=["call", "rule"], name="callcategory_once_per_call",
                violation_error_message="The call already has this category.",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"{self.rule.name} on call #{self.call_id}"
